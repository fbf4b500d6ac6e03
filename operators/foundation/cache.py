"""The read path: objects the watches delivered, served instead of asking the API server again.

kopf already watches everything the operator reacts to (Rollouts,
Applications, SidecarSets, Namespaces, and the Deployments, Services and routes
Sluice manages, the last three filtered by label on the server). Its event
handlers hand every event to a :class:`WatchCache`; :class:`CachedCluster`
reads from it, so a pass that finds nothing to do makes no request at all.

Kubernetes' informers have the same shape; what keeps a cache safe is the
write path, not the cache: every write carries the resourceVersion it was
based on, so a decision made on a stale copy is refused (409) by the API
server, and the object is then read again. Our own writes go into the cache
at once, so the next pass never decides on the state before them.

A key the watches have not delivered (yet) is read once from the API server
and remembered, also when it does not exist: a watch that covers it keeps it
current from then on. An object the watch does not cover (outside the
operator's namespaces, or without the label a watch filters by) is never
remembered: it would never be updated.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from operators.foundation.cluster import FIELD_MANAGER, Cluster, KubeError
from operators.foundation.keys import ObjectKey, key_of

Body = dict[str, Any]
KindKey = tuple[str, str]  # apiVersion, kind


@dataclass(frozen=True)
class Watched:
    """A kind the operator's watches deliver, and the label selector its watch uses ("" for all)."""

    api_version: str
    kind: str
    label_selector: str = ""
    cluster_scoped: bool = False
    # A label lists select by (its owner's name), indexed so a list never walks the whole kind.
    index_label: str = ""

    @property
    def key(self) -> KindKey:
        return (self.api_version, self.kind)

    def required_labels(self) -> dict[str, str]:
        return parse_equality_selector(self.label_selector) or {}


def parse_equality_selector(selector: str) -> dict[str, str] | None:
    """``a=b,c=d`` as a dict; None for anything else (set-based selectors go to the API server)."""
    labels: dict[str, str] = {}
    for term in filter(None, (part.strip() for part in selector.split(","))):
        name, sep, value = term.partition("=")
        if not sep or value.startswith("=") or name.endswith("!") or not name:
            return None
        labels[name.strip()] = value.strip()
    return labels


def _matches(body: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    present = (body.get("metadata") or {}).get("labels") or {}
    return all(present.get(name) == value for name, value in labels.items())


def _copied(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, scalars): what copy.deepcopy does, several times
    faster, since a pass copies every object it reads."""
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copied(item) for item in value]
    return value


def _resource_version(body: Mapping[str, Any] | None) -> int | None:
    """An integer resourceVersion, or None.

    Kubernetes documents resourceVersion as opaque. It is compared only to keep
    the cache from going back to an older copy when a watch event that was
    already in flight arrives after our own write; when it is not an integer,
    the newest arrival wins, and a stale decision is still refused by the write.
    """
    try:
        return int(((body or {}).get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return None


class WatchCache:
    """Objects by key, as the watches (and our own writes) last delivered them. Thread-safe.

    Readers are the reconcilers' worker threads, the writer of watch events is
    kopf's event loop: every access takes the lock, and readers get deep copies
    so nothing a pass does can change what the next pass reads.
    """

    def __init__(self, watched: Sequence[Watched] = (), namespaces: Sequence[str] = ()) -> None:
        self.watched: dict[KindKey, Watched] = {w.key: w for w in watched}
        # The namespaces the watches cover; empty: all of them.
        self.namespaces = frozenset(namespaces)
        # By kind, so that listing a small kind (SidecarSets) never walks the big ones.
        self._kinds: dict[KindKey, dict[ObjectKey, Body | None]] = {}  # None: known not to exist
        self._listed: set[KindKey] = set()  # kinds whose every covered object is here
        # kind -> (namespace, value of its index_label) -> keys, for the kinds that name one.
        self._index: dict[KindKey, dict[tuple[str, str], set[ObjectKey]]] = {}
        self._lock = threading.Lock()

    # ---- fed by the watches -------------------------------------------------------------------

    def observe(self, body: Mapping[str, Any], deleted: bool = False) -> None:
        """A watch event: the object as it is now, or gone."""
        key = key_of(body)
        with self._lock:
            if deleted:
                # Gone: a kind held in full (listed) knows it from now on; for another, the next
                # read asks once. A re-created object arrives through the watch anyway.
                self._drop(key)
                return
            self._store(key, dict(body))

    def _of(self, key: ObjectKey) -> dict[ObjectKey, Body | None]:
        return self._kinds.setdefault((key.api_version, key.kind), {})

    def _store(self, key: ObjectKey, body: Body) -> None:
        current = self._of(key).get(key)
        new_version, old_version = _resource_version(body), _resource_version(current)
        if new_version is not None and old_version is not None and new_version < old_version:
            return  # an event from before our own write, which is already here
        self._put(key, body)

    # Every change of what is stored goes through _put and _drop, which keep the label index.

    def _put(self, key: ObjectKey, body: Body | None) -> None:
        self._drop(key)
        self._of(key)[key] = body
        entry = self._index_entry(key, body)
        if entry is not None:
            self._index.setdefault((key.api_version, key.kind), {}).setdefault(entry, set()).add(key)

    def _drop(self, key: ObjectKey) -> None:
        entry = self._index_entry(key, self._of(key).pop(key, None))
        if entry is not None:
            self._index[(key.api_version, key.kind)][entry].discard(key)

    def _index_entry(self, key: ObjectKey, body: Body | None) -> tuple[str, str] | None:
        watched = self.watched.get((key.api_version, key.kind))
        if body is None or watched is None or not watched.index_label:
            return None
        value = ((body.get("metadata") or {}).get("labels") or {}).get(watched.index_label)
        return (key.namespace, str(value)) if value is not None else None

    # ---- what readers may rely on -------------------------------------------------------------

    def covers(self, key: ObjectKey, body: Mapping[str, Any] | None = None) -> bool:
        """Will the watches keep this object (or its absence) current?"""
        watched = self.watched.get((key.api_version, key.kind))
        if watched is None:
            return False
        if not watched.cluster_scoped and self.namespaces and key.namespace not in self.namespaces:
            return False
        return body is None or _matches(body, watched.required_labels())

    def lookup(self, key: ObjectKey) -> tuple[bool, Body | None]:
        """(known, a copy of the object or None when known absent)."""
        with self._lock:
            objects = self._of(key)
            if key not in objects:
                return False, None
            found = objects[key]
        return True, None if found is None else _copied(found)

    def remember(self, key: ObjectKey, body: Mapping[str, Any] | None, *, ours: bool = False) -> None:
        """A read's result (kept only if no watch event came meanwhile) or our own write's (always)."""
        if not self.covers(key, body):
            if ours:
                # Our write took the object out of what the watches deliver (its labels no longer
                # match): the copy held would never be updated again.
                self.removed(key)
            return
        with self._lock:
            objects = self._of(key)
            if body is None:
                if ours or key not in objects:
                    self._put(key, None)
                return
            if ours or key not in objects:
                self._store(key, dict(body))

    def removed(self, key: ObjectKey) -> None:
        """We deleted it (or found it gone): lists of its kind stay true without it."""
        with self._lock:
            self._drop(key)

    def forget(self, key: ObjectKey) -> None:
        """A write based on our copy was refused: read the object again next time.

        Lists of its kind are then read again too: they can no longer say the object is not there.
        """
        with self._lock:
            self._drop(key)
            self._listed.discard((key.api_version, key.kind))

    # ---- lists --------------------------------------------------------------------------------

    def listed(self, kind: KindKey) -> bool:
        with self._lock:
            return kind in self._listed

    def fill(self, watched: Watched, items: Sequence[Mapping[str, Any]]) -> None:
        """A full list of a watched kind: from now on, what is not here does not exist."""
        with self._lock:
            for item in items:
                key = key_of(item)
                if self._of(key).get(key) is None:
                    self._put(key, dict(item))
                else:
                    self._store(key, dict(item))
            self._listed.add(watched.key)

    def select(self, kind: KindKey, namespace: str | None, labels: Mapping[str, str]) -> list[Body]:
        """Copies of the objects of a listed kind in `namespace` (None: all) with these labels."""
        with self._lock:
            objects = self._kinds.get(kind, {})
            watched = self.watched.get(kind)
            keys: Iterable[ObjectKey] = objects
            if watched and watched.index_label in labels and namespace is not None:
                keys = list(self._index.get(kind, {}).get((namespace, labels[watched.index_label]), ()))
            found = [
                body
                for key in keys
                if (body := objects.get(key)) is not None
                and (namespace is None or key.namespace == namespace)
                and _matches(body, labels)
            ]
        ordered = sorted(found, key=lambda b: (key_of(b).namespace, key_of(b).name))
        return [_copied(body) for body in ordered]


class CachedCluster(Cluster):
    """A :class:`Cluster` whose reads come from the watches and whose writes go into them.

    Every reconciler takes it where it took a Cluster: the read path changes,
    the decisions do not.
    """

    def __init__(self, api: k8s.ApiClient, cache: WatchCache) -> None:
        super().__init__(api)
        self.cache = cache

    def get(self, key: ObjectKey) -> dict[str, Any] | None:
        known, body = self.cache.lookup(key)
        if known:
            return body
        if self.cache.listed((key.api_version, key.kind)) and self.cache.covers(key):
            return None  # a listed kind has every object its watch covers: this one does not exist
        body = super().get(key)
        self.cache.remember(key, body)
        return body

    def list_objects(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        watched = self.cache.watched.get((api_version, kind))
        labels = parse_equality_selector(label_selector)
        if watched is None or labels is None or not self._listable(watched, namespace):
            return super().list_objects(api_version, kind, namespace, label_selector)
        if not self.cache.listed(watched.key):
            self._fill(watched)
        return self.cache.select(watched.key, namespace, {**watched.required_labels(), **labels})

    def _listable(self, watched: Watched, namespace: str | None) -> bool:
        """Can a list in `namespace` be answered from what the watches cover?"""
        if watched.cluster_scoped or not self.cache.namespaces:
            return True
        return namespace is not None and namespace in self.cache.namespaces

    def _fill(self, watched: Watched) -> None:
        """The first list of a kind comes from the API server, in the scope its watch covers."""
        scopes: Sequence[str | None] = (
            [None] if watched.cluster_scoped or not self.cache.namespaces else sorted(self.cache.namespaces)
        )
        items: list[dict[str, Any]] = []
        for scope in scopes:
            items += super().list_objects(watched.api_version, watched.kind, scope, watched.label_selector)
        self.cache.fill(watched, items)

    # ---- writes: remembered at once; a refused one makes the next read ask again --------------

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return self._written(key_of(obj), lambda: super(CachedCluster, self).create(obj))

    def merge_patch(self, key: ObjectKey, patch: Mapping[str, Any], subresource: str = "") -> dict[str, Any]:
        return self._written(key, lambda: super(CachedCluster, self).merge_patch(key, patch, subresource))

    def apply(
        self, obj: Mapping[str, Any], subresource: str = "", field_manager: str = FIELD_MANAGER
    ) -> dict[str, Any]:
        return self._written(
            key_of(obj), lambda: super(CachedCluster, self).apply(obj, subresource, field_manager)
        )

    def delete(self, key: ObjectKey) -> None:
        super().delete(key)  # gone already is fine too
        self.cache.removed(key)

    def _written(self, key: ObjectKey, write: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            result = write()
        except KubeError as error:
            if error.status in (404, 409):
                self.cache.forget(key)
            raise
        if result.get("metadata"):
            self.cache.remember(key, {"apiVersion": key.api_version, "kind": key.kind, **result}, ours=True)
        return result
