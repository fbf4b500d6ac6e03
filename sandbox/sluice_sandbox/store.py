"""
The in-memory object store of the sandbox API server, with Kubernetes API semantics.

It is the single source of truth for both the HTTP front (``resource_api.py``) and in-process
simulators (``workloads.py``): every write goes through the same rules (resourceVersion,
generation, status subresource, finalizers, graceful deletion, garbage collection, and each
resource's admission step: built-ins' defaults, custom objects' schema, see ``crds.py``) and
lands in one event log that watches replay from, so a watch started from a list's
resourceVersion misses nothing.

Graceful deletion (pods, see :attr:`ResourceSpec.grace_period`), as the API server does it:
deleting a pod only marks it, with ``deletionGracePeriodSeconds`` and a ``deletionTimestamp``
at the end of that grace period (a MODIFIED event); the kubelet (the workload simulator) deletes
it again with ``gracePeriodSeconds: 0`` once its containers have stopped, which removes it (a
DELETED event). A later deletion may only shorten the grace period; 0 removes it at once. The
garbage collector deletes dependent pods the same graceful way.

Stored objects are never changed in place once committed: every write stores a new dict. So the
store hands its own objects out wherever the receiver only reads them (``shared=True`` reads,
:meth:`Store.subscribe`, watch-streams encoded once for all their HTTP watchers) and copies them
only for callers that may change what they get (the default of every public read and write).

Indexes keep each request's cost to what it asks for: objects by namespace and by label value
(lists and the replay of new watches), dependents by owner uid (garbage collection), watches by
resource (fan-out, with namespace, label and field selectors applied before anything is queued
or encoded).

All methods must be called on one event loop; one ``asyncio.Lock`` serialises the writes.
"""

import asyncio
import builtins  # Store.list() shadows the builtin in the class body's annotations
import collections
import copy
import dataclasses
import json
import logging
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import kmock

from sluice_sandbox import fieldmanager, patching, selectors
from sluice_sandbox.crds import CUSTOM_RESOURCE_DEFINITIONS, resources_from_crd
from sluice_sandbox.errors import ApiError, FieldError, GoValue
from sluice_sandbox.fieldsets import SYSTEM_METADATA, Shape
from sluice_sandbox.resources import (
    ALL_VERBS,
    SUBRESOURCE_VERBS,
    Admission,
    FieldValidation,
    JsonObject,
    ResourceSpec,
    ScaleSpec,
    format_time,
    now,
    parse_time,
    version_priority,
)

logger = logging.getLogger(__name__)

# What other modules import from here, from before the store was split into modules.
__all__ = [
    "ALL_VERBS",
    "CUSTOM_RESOURCE_DEFINITIONS",
    "SUBRESOURCE_VERBS",
    "ApiError",
    "FieldValidation",
    "JsonObject",
    "ResourceSpec",
    "ScaleSpec",
    "Store",
    "Watch",
    "bumps_generation",
    "now",
    "resources_from_crd",
    "version_priority",
]

ADDED, MODIFIED, DELETED, BOOKMARK = "ADDED", "MODIFIED", "DELETED", "BOOKMARK"
# Deletion propagation policies. Foreground is accepted, but works as Background.
BACKGROUND, ORPHAN = "Background", "Orphan"

NAMESPACES_KEY = ("", "namespaces")

# The field manager of in-process writes that name none (simulators, tests' store calls).
IN_PROCESS_MANAGER = "sluice-sandbox"

# A resource as in-process callers name it: a spec, or any notation that kmock.resource() parses.
ResourceRef = str | ResourceSpec

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


_NOT_DESIRED_STATE = frozenset({"metadata", "status", "apiVersion", "kind"})


def bumps_generation(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """
    Whether a write moves ``metadata.generation``: only when the desired state changes,
    i.e. anything outside ``metadata`` & ``status`` (spec, data, rules, webhooks…).
    """

    def desired(obj: Mapping[str, Any]) -> dict[str, Any]:
        return {key: val for key, val in obj.items() if key not in _NOT_DESIRED_STATE}

    return desired(old) != desired(new)


StorageKey = tuple[str, str]  # (group, plural): all served versions of a resource share its objects
ObjectKey = tuple[str | None, str]  # (namespace, name)


@dataclasses.dataclass(frozen=True)
class Change:
    """
    One entry of the event log. ``old`` lets watches with selectors see objects leave. Both are
    the store's own objects: read them, never change them.
    """

    resource_version: int
    key: StorageKey
    type: str
    obj: JsonObject
    old: JsonObject | None = None
    # Made up for one new watch (the current state, a bookmark) rather than logged: such changes
    # share a resourceVersion, so their encodings are not cached under it.
    replayed: bool = False


# An in-process follower of a resource (see Store.subscribe).
ChangeHandler = Callable[[Change], None]

# How many events one write of a watch-stream carries at most (a replay can be thousands).
_CHUNK_EVENTS = 100
# How many encoded events the store keeps for watchers that have not sent them yet.
_ENCODED_CACHE = 4096


class Watch:
    """
    A watch-stream: ``async with store.watch(...) as events: async for event in events: ...``.

    Events are dicts ``{'type': ..., 'object': ...}`` exactly as sent in HTTP watch-streams (deep
    copies: the caller owns them); :meth:`chunks` gives them encoded, as the HTTP server sends them.
    The selectors are applied as changes are offered, so changes that a watch does not select
    cost it nothing more.
    """

    def __init__(
        self,
        store: "Store",
        spec: ResourceSpec,
        *,
        namespace: str | None,
        resource_version: str | None,
        label_selector: selectors.LabelSelector,
        field_selector: selectors.FieldSelector,
        send_initial_events: bool,
        timeout: float | None,
    ) -> None:
        self._store = store
        self._spec = spec
        self._namespace = namespace if spec.namespaced else None
        self._since = resource_version
        self._label_selector = label_selector
        self._field_selector = field_selector
        self._send_initial_events = send_initial_events
        self._timeout = timeout
        self._deadline: float | None = None
        # Events as (type, change): the type this watch sees, e.g. ADDED for an object that
        # entered its selection by a MODIFIED change.
        self._backlog: collections.deque[tuple[str, Change]] = collections.deque()
        self._queue: asyncio.Queue[tuple[str, Change] | None] = asyncio.Queue()

    async def __aenter__(self) -> Self:
        if self._timeout is not None:
            self._deadline = asyncio.get_running_loop().time() + self._timeout
        backlog = await self._store._subscribe(
            self, self._spec, self._since, self._send_initial_events, self._namespace, self._label_selector
        )
        for change in backlog:
            event_type = self._classify(change)
            if event_type is not None:
                self._backlog.append((event_type, change))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._store._unsubscribe(self)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> JsonObject:
        event = await self._next()
        if event is None:
            raise StopAsyncIteration
        event_type, change = event
        obj = copy.deepcopy(change.obj)
        if event_type != BOOKMARK:
            obj["apiVersion"] = self._spec.api_version
        return {"type": event_type, "object": obj}

    async def chunks(self) -> AsyncIterator[bytes]:
        """
        The events as JSON lines, as an HTTP watch-stream sends them: all those ready at once in
        one chunk (up to a bound), each encoded once for all the watchers of its change.
        """
        ended = False
        while not ended:
            first = await self._next()
            if first is None:
                return
            events = [first]
            while len(events) < _CHUNK_EVENTS:
                if self._backlog:
                    events.append(self._backlog.popleft())
                    continue
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is None:
                    ended = True
                    break
                events.append(item)
            yield b"".join(
                self._store._encode(self._spec, event_type, change) for event_type, change in events
            )

    @property
    def key(self) -> StorageKey:
        """The storage key of the watched resource."""
        return self._spec.key

    def offer(self, change: Change) -> None:
        """A change of the watched resource, just committed: queued if the watch selects it."""
        event_type = self._classify(change)
        if event_type is not None:
            self._queue.put_nowait((event_type, change))

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def _next(self) -> tuple[str, Change] | None:
        return self._backlog.popleft() if self._backlog else await self._next_live()

    async def _next_live(self) -> tuple[str, Change] | None:
        if self._deadline is None:
            return await self._queue.get()
        remaining = self._deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(self._queue.get(), timeout=max(0.0, remaining))
        except TimeoutError:
            return None  # timeoutSeconds: the server closes the stream, the client reconnects

    def _matches(self, obj: JsonObject | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        return (
            (self._namespace is None or meta.get("namespace") == self._namespace)
            and self._label_selector.matches(meta.get("labels"))
            and self._field_selector.matches(obj)
        )

    def _classify(self, change: Change) -> str | None:
        """The event type this watch sees of a change, or None if it sees nothing of it."""
        if change.type == BOOKMARK:
            return BOOKMARK
        matches_now = self._matches(change.obj)
        if change.type == MODIFIED and matches_now != self._matches(change.old):
            # The object entered or left the selection: that is what the watcher sees.
            return ADDED if matches_now else DELETED
        return change.type if matches_now else None


class Store:
    """The objects of all served resources, plus the resource registry and the event log."""

    def __init__(self, resources: Iterable[ResourceSpec] = (), *, history: int = 100_000) -> None:
        self._lock = asyncio.Lock()
        self._closed = False
        self._resource_version = 0
        self._specs: dict[tuple[str, str, str], ResourceSpec] = {}
        self._objects: dict[StorageKey, dict[ObjectKey, JsonObject]] = collections.defaultdict(dict)
        # The same objects by namespace then name: a namespaced list or watch reads its namespace only.
        self._by_namespace: dict[StorageKey, dict[str | None, dict[str, JsonObject]]] = (
            collections.defaultdict(dict)
        )
        # The same objects by label (key, value): selectors with `=` or `in` read those only.
        self._by_label: dict[StorageKey, dict[tuple[str, str], dict[ObjectKey, JsonObject]]] = (
            collections.defaultdict(dict)
        )
        self._uids: dict[str, tuple[StorageKey, ObjectKey]] = {}
        # Owner uid -> its dependents (insertion-ordered): the garbage collector's lookup.
        self._dependents: dict[str, dict[tuple[StorageKey, ObjectKey], None]] = {}
        self._log: collections.deque[Change] = collections.deque(maxlen=history)
        self._log_floor = 0  # watches from before this resourceVersion get 410 Gone
        self._watches: dict[StorageKey, set[Watch]] = collections.defaultdict(set)
        self._watches_changed = asyncio.Condition()
        self._subscribers: dict[StorageKey, builtins.list[ChangeHandler]] = collections.defaultdict(list)
        # Watch events as sent over HTTP, by (resourceVersion, event type, apiVersion): a change
        # goes to several watchers (kopf, kubectl, tests), and is encoded once for all of them.
        self._encoded: dict[tuple[int, str, str], bytes] = {}
        self._crd_resources: dict[str, list[ResourceSpec]] = {}
        self._registry_version = 0
        self._storage_specs: dict[StorageKey, ResourceSpec] = {}
        self._storage_specs_version = -1
        self._shapes: dict[tuple[ResourceSpec, int], Shape] = {}
        for spec in [CUSTOM_RESOURCE_DEFINITIONS, *resources]:
            self.register(spec)

    # ----- The registry of served resources -----

    @property
    def resource_version(self) -> str:
        return str(self._resource_version)

    @property
    def resources(self) -> list[ResourceSpec]:
        return sorted(self._specs.values(), key=lambda s: (s.group, s.plural, version_priority(s.version)))

    @property
    def registry_version(self) -> int:
        """Moves whenever the served resources change: what caches of discovery documents key on."""
        return self._registry_version

    def register(self, spec: ResourceSpec) -> None:
        self._specs[spec.group, spec.version, spec.plural] = spec
        self._registry_version += 1

    def unregister(self, spec: ResourceSpec) -> None:
        if self._specs.pop((spec.group, spec.version, spec.plural), None) is not None:
            self._registry_version += 1

    def lookup(self, group: str, version: str, plural: str) -> ResourceSpec | None:
        return self._specs.get((group, version, plural))

    def resolve(self, ref: ResourceRef) -> ResourceSpec:
        """
        Find a served resource by a spec or by a name in any of kmock's notations:
        ``deployments``, ``deploy``, ``Deployment``, ``deployments.apps``, ``apps/v1/deployments``,
        ``v1/pods``. Ambiguous names prefer the core group and the preferred version (as kubectl).
        """
        wanted = (
            kmock.resource(ref.group, ref.version, ref.plural)
            if isinstance(ref, ResourceSpec)
            else (kmock.resource(ref))
        )
        name = (wanted.plural or "").lower()
        candidates = [
            spec
            for spec in self._specs.values()
            if wanted.group is None or wanted.group == spec.group
            if wanted.version is None or wanted.version == spec.version
            if name in spec.names()
        ]
        if not candidates:
            raise ApiError.resource_not_found()
        return min(candidates, key=lambda s: (s.group != "", s.plural != name, version_priority(s.version)))

    async def install_crd(self, crd: Mapping[str, Any]) -> JsonObject:
        """Create or replace a CRD; its resource is served as soon as this returns."""
        name = crd.get("metadata", {}).get("name", "")
        async with self._lock:
            existing = self._objects[CUSTOM_RESOURCE_DEFINITIONS.key].get((None, name))
            spec = CUSTOM_RESOURCE_DEFINITIONS
            if existing is None:
                created = self._create(
                    spec, crd, None, Admission("create"), dry_run=False, manager=IN_PROCESS_MANAGER
                )
                return copy.deepcopy(created)
            body = copy.deepcopy(dict(crd))
            body.setdefault("metadata", {}).pop("resourceVersion", None)  # replace unconditionally
            updated = self._update(
                spec, existing, body, Admission("update"), dry_run=False, manager=IN_PROCESS_MANAGER
            )
            return copy.deepcopy(updated)

    # ----- Reading -----

    # Reads take `shared`: True hands out the store's own objects (no copy; the caller must not
    # change them, e.g. it only serialises them), False (the default) copies that the caller owns.

    async def get(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str,
        *,
        subresource: str | None = None,
        shared: bool = False,
    ) -> JsonObject:
        spec = self._resolve_subresource(resource, subresource)
        async with self._lock:
            obj = self._find(spec, namespace, name)
            if subresource == "scale":
                return self._scale_of(spec, obj)
            return self._view(spec, obj) if shared else self._output(spec, obj)

    async def list(
        self,
        resource: ResourceRef,
        namespace: str | None = None,
        label_selector: str | selectors.LabelSelector | None = None,
        field_selector: str | selectors.FieldSelector | None = None,
        *,
        shared: bool = False,
    ) -> JsonObject:
        """A ``<Kind>List`` object, as the API returns it (``items`` & ``metadata.resourceVersion``)."""
        spec = self.resolve(resource)
        output = self._view if shared else self._output
        async with self._lock:
            items = self._select(
                spec, namespace, _label_selector(label_selector), _field_selector(field_selector)
            )
            return {
                "kind": f"{spec.kind}List",
                "apiVersion": spec.api_version,
                "metadata": {"resourceVersion": self.resource_version},
                "items": [output(spec, obj) for obj in items],
            }

    def watch(
        self,
        resource: ResourceRef,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str | selectors.LabelSelector | None = None,
        field_selector: str | selectors.FieldSelector | None = None,
        send_initial_events: bool = False,
        timeout: float | None = None,
    ) -> Watch:
        """
        Watch changes newer than ``resource_version``; without it (or with "0"), first get
        a synthetic ``ADDED`` for every existing object. Use as ``async with``.
        """
        return Watch(
            self,
            self.resolve(resource),
            namespace=namespace,
            resource_version=resource_version,
            label_selector=_label_selector(label_selector),
            field_selector=_field_selector(field_selector),
            send_initial_events=send_initial_events,
            timeout=timeout,
        )

    async def wait_for(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str | None,
        predicate: Callable[[JsonObject], bool],
        *,
        timeout: float = 10,
    ) -> JsonObject:
        """
        Wait until the named object (or any object if ``name`` is None) exists and satisfies
        the predicate (event-driven, no polling); raise ``TimeoutError`` otherwise.
        """
        selector = None if name is None else f"metadata.name={name}"
        async with asyncio.timeout(timeout):
            async with self.watch(resource, namespace, field_selector=selector) as events:
                async for event in events:
                    obj: JsonObject = event["object"]
                    if event["type"] != DELETED and predicate(obj):
                        return obj
        raise TimeoutError(f"The store was closed while waiting for {name!r}.")

    async def wait_for_deletion(
        self, resource: ResourceRef, namespace: str | None, name: str, *, timeout: float = 10
    ) -> None:
        """Wait until the object does not exist (e.g. after its finalizers are removed)."""
        selector = f"metadata.name={name}"
        async with asyncio.timeout(timeout):
            listed = await self.list(resource, namespace, field_selector=selector)
            if not listed["items"]:
                return
            since = listed["metadata"]["resourceVersion"]
            watch = self.watch(resource, namespace, resource_version=since, field_selector=selector)
            async with watch as events:
                async for event in events:
                    if event["type"] == DELETED:
                        return
        raise TimeoutError(f"The store was closed while waiting for {name!r} to be deleted.")

    async def wait_for_watchers(self, resource: ResourceRef, count: int = 1, *, timeout: float = 10) -> None:
        """
        Wait until at least ``count`` watch-streams follow the resource: e.g. until a client (such
        as ``kubectl wait``) watches, so that a test changes the object only after that.
        """
        key = self.resolve(resource).key
        async with asyncio.timeout(timeout), self._watches_changed:
            await self._watches_changed.wait_for(lambda: len(self._watches.get(key, ())) >= count)

    def subscribe(self, resource: ResourceRef | StorageKey, handler: ChangeHandler) -> Callable[[], None]:
        """
        Follow a resource in-process, as an informer does but never behind the store: ``handler``
        gets an ``ADDED`` change for each existing object at once, then every change as part of
        the write that makes it (so an index it keeps is current whenever the store is read).

        The resource is a spec, a name, or a storage key ``(group, plural)``: a key may name a
        custom resource whose CRD is not installed yet. The changes carry the store's own
        objects: never change them. A handler must be quick and must not call the store; its
        exceptions are logged and do not fail the write. Returns a function that unsubscribes.
        """
        key = resource if isinstance(resource, tuple) else self.resolve(resource).key
        for _, obj in sorted(self._objects[key].items(), key=_sort_key):
            handler(Change(self._resource_version, key, ADDED, obj, replayed=True))
        self._subscribers[key].append(handler)

        def unsubscribe() -> None:
            if handler in self._subscribers[key]:
                self._subscribers[key].remove(handler)

        return unsubscribe

    async def _subscribe(
        self,
        watch: Watch,
        spec: ResourceSpec,
        since: str | None,
        send_initial_events: bool,
        namespace: str | None,
        label_selector: selectors.LabelSelector,
    ) -> builtins.list[Change]:
        """Start feeding a watch; atomically with it, get the events it must replay first."""
        async with self._lock:
            backlog = self._replay(spec, since, send_initial_events, namespace, label_selector)
            self._watches[spec.key].add(watch)
            if self._closed:
                watch.close()
        async with self._watches_changed:
            self._watches_changed.notify_all()
        return backlog

    def _unsubscribe(self, watch: Watch) -> None:
        self._watches[watch.key].discard(watch)

    def close(self) -> None:
        """End all watch-streams (e.g. on server shutdown) and refuse to hold new ones open."""
        self._closed = True
        for watches in self._watches.values():
            for watch in list(watches):
                watch.close()

    # ----- Writing -----

    # Writes take `field_validation` (what to do about fields a CRD's schema does not know, see
    # FieldValidation), `warnings` (a list that collects what to tell the client), `shared`
    # (as reads: whether the result may be the store's own object, for callers that only read it),
    # and `field_manager` (who writes: the manager that metadata.managedFields records).

    async def create(
        self,
        resource: ResourceRef,
        body: Mapping[str, Any],
        namespace: str | None = None,
        *,
        dry_run: bool = False,
        field_validation: FieldValidation = FieldValidation.IGNORE,
        warnings: builtins.list[str] | None = None,
        shared: bool = False,
        field_manager: str | None = None,
    ) -> JsonObject:
        spec = self.resolve(resource)
        admission = Admission("create", field_validation=field_validation)
        manager = field_manager or IN_PROCESS_MANAGER
        async with self._lock:
            created = self._create(spec, body, namespace, admission, dry_run=dry_run, manager=manager)
        if warnings is not None:
            warnings.extend(admission.warnings)
        return _handed(created, shared)

    async def replace(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str,
        body: Mapping[str, Any],
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: FieldValidation = FieldValidation.IGNORE,
        warnings: builtins.list[str] | None = None,
        shared: bool = False,
        field_manager: str | None = None,
    ) -> JsonObject:
        """PUT: the body replaces the object (or its status/scale); a stale resourceVersion is a 409."""
        if not isinstance(body, Mapping):
            raise ApiError.bad_request("the body of the request must be a JSON object")
        admission = Admission("update", subresource, field_validation)
        replaced = await self._modify(
            resource,
            namespace,
            name,
            lambda _: copy.deepcopy(dict(body)),
            admission,
            dry_run=dry_run,
            manager=field_manager or IN_PROCESS_MANAGER,
        )
        if warnings is not None:
            warnings.extend(admission.warnings)
        return _handed(replaced, shared)

    async def patch(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: patching.PatchType = patching.PatchType.MERGE,
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: FieldValidation = FieldValidation.IGNORE,
        warnings: builtins.list[str] | None = None,
        shared: bool = False,
        field_manager: str | None = None,
        force: bool | None = None,
    ) -> JsonObject:
        """
        PATCH in any of its flavours. A server-side apply (``PatchType.APPLY``) needs a
        ``field_manager`` and may create the object: see :meth:`apply`.
        """
        if patch_type is patching.PatchType.APPLY:
            applied, _ = await self.apply(
                resource,
                namespace,
                name,
                patch,
                field_manager=field_manager,
                force=force,
                subresource=subresource,
                dry_run=dry_run,
                field_validation=field_validation,
                warnings=warnings,
                shared=shared,
            )
            return applied
        if force is not None:
            raise ApiError.invalid_options(
                "PatchOptions", [FieldError.forbidden("force", "may not be specified for non-apply patch")]
            )
        spec = self._resolve_subresource(resource, subresource)
        if patch_type is patching.PatchType.STRATEGIC and not spec.builtin:
            raise ApiError.unsupported_media_type(
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{patching.PatchType.JSON.value}, {patching.PatchType.MERGE.value}, "
                f"{patching.PatchType.APPLY.value}"
            )

        def apply(current: JsonObject) -> JsonObject:
            try:
                return patching.apply_patch(patch_type, current, patch)  # a new object: `current` is kept
            except patching.UnsupportedPatchError as e:
                raise ApiError.unsupported_media_type(str(e)) from e
            except patching.PatchError as e:
                raise ApiError.unprocessable(spec, name, str(e)) from e

        admission = Admission("update", subresource, field_validation)
        manager = field_manager or IN_PROCESS_MANAGER
        patched = await self._modify(
            spec, namespace, name, apply, admission, dry_run=dry_run, manager=manager
        )
        if warnings is not None:
            warnings.extend(admission.warnings)
        return _handed(patched, shared)

    async def apply(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str,
        config: Any,
        *,
        field_manager: str | None,
        force: bool | None = None,
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: FieldValidation = FieldValidation.IGNORE,
        warnings: builtins.list[str] | None = None,
        shared: bool = False,
    ) -> tuple[JsonObject, bool]:
        """
        Server-side apply (see :mod:`sluice_sandbox.fieldmanager`): merge the configuration into
        the object, or create it from the configuration. Returns the object and whether it was
        created. A ``metadata.resourceVersion`` in the configuration is a precondition (409).
        """
        spec = self._resolve_subresource(resource, subresource)
        if not field_manager:
            raise ApiError.invalid_options(
                "PatchOptions", [FieldError.required("fieldManager", "is required for apply patch")]
            )
        if subresource == "scale":
            raise ApiError.unsupported_media_type("the sandbox does not apply to the scale subresource")
        config = _apply_configuration(spec, name, config)
        manager = fieldmanager.Manager(field_manager, spec.api_version, subresource)
        part = fieldmanager.config_part(config, subresource, spec.status)
        shape = self._shape(spec)
        force = bool(force)
        async with self._lock:
            live = self._objects[spec.key].get((namespace if spec.namespaced else None, name))
            if live is None:
                if subresource is not None or config["metadata"].get("resourceVersion"):
                    raise ApiError.not_found(spec, name) if subresource else ApiError.conflict(spec, name)
                admission = Admission("create", field_validation=field_validation)
                candidate = fieldmanager.apply(None, part, manager, shape, force=force, time=now())
                result = self._create(spec, candidate, namespace, admission, dry_run=dry_run, manager=None)
            else:
                admission = Admission("update", subresource, field_validation)
                try:
                    candidate = fieldmanager.apply(
                        self._view(spec, live), part, manager, shape, force=force, time=now()
                    )
                except fieldmanager.Conflicts as e:
                    raise ApiError.apply_conflict(e.message, e.causes) from e
                result = self._update(spec, live, candidate, admission, dry_run=dry_run, manager=None)
        if warnings is not None:
            warnings.extend(admission.warnings)
        return _handed(result, shared), live is None

    async def patch_status(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: patching.PatchType = patching.PatchType.MERGE,
        shared: bool = False,
        field_manager: str | None = None,
    ) -> JsonObject:
        """Patch only the status (through ``/status`` if the resource has that subresource)."""
        spec = self.resolve(resource)
        if not spec.status and isinstance(patch, Mapping):
            patch = {"status": patch["status"]} if "status" in patch else {}
        return await self.patch(
            spec,
            namespace,
            name,
            patch,
            patch_type=patch_type,
            subresource="status" if spec.status else None,
            shared=shared,
            field_manager=field_manager,
        )

    async def delete(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str,
        *,
        propagation: str | None = None,
        preconditions: Mapping[str, Any] | None = None,
        grace_period: int | None = None,
        dry_run: bool = False,
        shared: bool = False,
    ) -> JsonObject:
        """
        Delete an object: mark it with ``deletionTimestamp`` if it has finalizers (it goes away
        when they are removed) or is deleted gracefully (a pod: it goes away when deleted again
        with ``grace_period=0``, see the module docs), otherwise remove it and garbage-collect
        its dependents. ``grace_period`` is DeleteOptions' ``gracePeriodSeconds`` (None: the
        object's default). Returns the latest state; a pending deletion still exists.
        """
        spec = self.resolve(resource)
        async with self._lock:
            obj = self._find(spec, namespace, name)
            for field, value in (preconditions or {}).items():
                if value is not None and obj["metadata"].get(field) != value:
                    raise ApiError.conflict(spec, name)
            deleted = self._delete(
                spec, obj, propagation or BACKGROUND, grace_period=grace_period, dry_run=dry_run
            )
        return _handed(deleted, shared)

    async def delete_collection(
        self,
        resource: ResourceRef,
        namespace: str | None = None,
        label_selector: str | selectors.LabelSelector | None = None,
        field_selector: str | selectors.FieldSelector | None = None,
        *,
        propagation: str | None = None,
        grace_period: int | None = None,
        dry_run: bool = False,
    ) -> JsonObject:
        spec = self.resolve(resource)
        async with self._lock:
            items = self._select(
                spec, namespace, _label_selector(label_selector), _field_selector(field_selector)
            )
            deleted = []
            for item in items:
                obj = self._objects[spec.key].get(_object_key(item))  # maybe garbage-collected already
                if obj is not None:
                    deleted.append(
                        self._delete(
                            spec, obj, propagation or BACKGROUND, grace_period=grace_period, dry_run=dry_run
                        )
                    )
            return {
                "kind": f"{spec.kind}List",
                "apiVersion": spec.api_version,
                "metadata": {"resourceVersion": self.resource_version},
                "items": [copy.deepcopy(obj) for obj in deleted],
            }

    # ----- Internals (called with the lock held) -----

    # They return the objects as stored (see _view): the public methods copy them unless shared.

    def _resolve_subresource(self, resource: ResourceRef, subresource: str | None) -> ResourceSpec:
        spec = self.resolve(resource)
        if subresource is not None and subresource not in spec.subresources:
            raise ApiError.resource_not_found()
        return spec

    def _storage_spec(self, key: StorageKey) -> ResourceSpec | None:
        if self._storage_specs_version != self._registry_version:
            self._storage_specs = {}
            for spec in sorted(self._specs.values(), key=lambda s: version_priority(s.version), reverse=True):
                self._storage_specs[spec.key] = spec  # the preferred version last: it wins
            self._storage_specs_version = self._registry_version
        return self._storage_specs.get(key)

    def _shape(self, spec: ResourceSpec) -> Shape:
        """How the resource's lists and maps merge, for field management (made once per schema)."""
        key = (spec, id(spec.schema))
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = Shape.of_resource(spec.schema, spec.builtin)
        return shape

    def _find(self, spec: ResourceSpec, namespace: str | None, name: str) -> JsonObject:
        if spec.namespaced and namespace is None:
            raise ApiError.not_found(spec, name)
        obj = self._objects[spec.key].get((namespace if spec.namespaced else None, name))
        if obj is None:
            raise ApiError.not_found(spec, name)
        return obj

    def _select(
        self,
        spec: ResourceSpec,
        namespace: str | None,
        label_selector: selectors.LabelSelector,
        field_selector: selectors.FieldSelector,
    ) -> builtins.list[JsonObject]:
        return [
            obj
            for obj in self._in_scope(spec, namespace, label_selector)
            if label_selector.matches(obj["metadata"].get("labels"))
            if field_selector.matches(obj)
        ]

    def _in_scope(
        self,
        spec: ResourceSpec,
        namespace: str | None,
        label_selector: selectors.LabelSelector | None = None,
    ) -> builtins.list[JsonObject]:
        """
        The objects of a resource that a selection may include, in the API's order (namespace,
        name): those of the namespace if given, or fewer still, those with the label value (one
        of the values) that a requirement of the label selector demands. The caller applies the
        selectors.
        """
        namespace = namespace if spec.namespaced else None
        labelled: dict[ObjectKey, JsonObject] | None = None
        for requirement in label_selector.requirements if label_selector is not None else ():
            if requirement.operator in (selectors.Operator.EQUALS, selectors.Operator.IN):
                index = self._by_label[spec.key]
                found = {
                    object_key: obj
                    for value in requirement.values
                    for object_key, obj in index.get((requirement.key, value), {}).items()
                }
                if labelled is None or len(found) < len(labelled):
                    labelled = found
        if labelled is not None:
            return [
                obj
                for object_key, obj in sorted(labelled.items(), key=_sort_key)
                if namespace is None or object_key[0] == namespace
            ]
        if namespace is not None:
            in_namespace = self._by_namespace[spec.key].get(namespace) or {}
            return [obj for _, obj in sorted(in_namespace.items())]
        return [obj for _, obj in sorted(self._objects[spec.key].items(), key=_sort_key)]

    def _output(self, spec: ResourceSpec, obj: JsonObject) -> JsonObject:
        result = copy.deepcopy(obj)
        result["apiVersion"] = spec.api_version  # the same objects are served under every version
        return result

    def _view(self, spec: ResourceSpec, obj: JsonObject) -> JsonObject:
        """The object as served under this spec's version, sharing everything with the stored one."""
        return obj if obj.get("apiVersion") == spec.api_version else {**obj, "apiVersion": spec.api_version}

    def _encode(self, spec: ResourceSpec, event_type: str, change: Change) -> bytes:
        """A watch event as a JSON line, encoded once per event type and version (see _encoded)."""
        cache_key = (change.resource_version, event_type, spec.api_version)
        if not change.replayed and (cached := self._encoded.get(cache_key)) is not None:
            return cached
        obj = change.obj if event_type == BOOKMARK else self._view(spec, change.obj)
        encoded = json.dumps({"type": event_type, "object": obj}).encode() + b"\n"
        if not change.replayed:
            if len(self._encoded) >= _ENCODED_CACHE:
                del self._encoded[next(iter(self._encoded))]  # the oldest: its watchers have sent it
            self._encoded[cache_key] = encoded
        return encoded

    async def _modify(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str,
        change: Callable[[JsonObject], JsonObject],
        admission: Admission,
        *,
        dry_run: bool,
        manager: str,
    ) -> JsonObject:
        spec = self._resolve_subresource(resource, admission.subresource)
        async with self._lock:
            old = self._find(spec, namespace, name)
            if admission.subresource == "scale":
                return self._modify_scale(spec, old, change, dry_run=dry_run, manager=manager)
            # `change` makes a new object (a patch applied to a copy, or a copy of the body): it is
            # handed the stored one, uncopied.
            candidate = change(self._view(spec, old))
            return self._update(spec, old, candidate, admission, dry_run=dry_run, manager=manager)

    def _create(
        self,
        spec: ResourceSpec,
        body: Mapping[str, Any],
        namespace: str | None,
        admission: Admission,
        *,
        dry_run: bool,
        manager: str | None,
    ) -> JsonObject:
        """Create an object; ``manager`` None: the body is an apply's, with its managedFields."""
        if not isinstance(body, Mapping) or not isinstance(body.get("metadata", {}), Mapping):
            raise ApiError.bad_request("the body of the request must be a JSON object with metadata")
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        for field in SYSTEM_METADATA:
            meta.pop(field, None)
        if spec.namespaced:
            meta["namespace"] = self._namespace_for_create(spec, meta, namespace)
        else:
            meta.pop("namespace", None)
        meta["name"] = self._name_for_create(spec, meta)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        obj["apiVersion"], obj["kind"] = spec.api_version, spec.kind
        if spec.status:
            obj.pop("status", None)  # the status is only written through /status
        if spec.prepare is not None:
            spec.prepare(spec, obj, admission)
        if _object_key(obj) in self._objects[spec.key]:
            raise ApiError.already_exists(spec, meta["name"])
        if manager is not None:
            fieldmanager.record_update(
                None, obj, fieldmanager.Manager(manager, spec.api_version), self._shape(spec), time=now()
            )
        return self._commit(spec, ADDED, obj, None, dry_run=dry_run)

    def _name_for_create(self, spec: ResourceSpec, meta: JsonObject) -> str:
        name = meta.get("name")
        if not name and meta.get("generateName"):
            # As the API server does: 5 random chars from an alphabet without vowels & look-alikes.
            while not name or (meta.get("namespace"), name) in self._objects[spec.key]:
                name = str(meta["generateName"]) + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        if not name:
            raise ApiError.invalid(
                spec, None, [FieldError.required("metadata.name", "name or generateName is required")]
            )
        if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            # Names that a real cluster refuses must fail here too, not only in e2e tests.
            raise ApiError.invalid(
                spec,
                str(name),
                [
                    FieldError.invalid(
                        "metadata.name",
                        name,
                        "a lowercase RFC 1123 subdomain must consist of lower case "
                        "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
                        "character",
                    )
                ],
            )
        return name

    def _namespace_for_create(self, spec: ResourceSpec, meta: JsonObject, namespace: str | None) -> str:
        if namespace is not None and meta.get("namespace") not in (None, "", namespace):
            raise ApiError.invalid(
                spec,
                meta.get("name"),
                [
                    FieldError.invalid(
                        "metadata.namespace",
                        meta.get("namespace"),
                        "the namespace of the provided object does not match the namespace sent on the request",  # noqa: E501 (the API server's words)
                    )
                ],
            )
        return namespace or meta.get("namespace") or "default"

    def _update(
        self,
        spec: ResourceSpec,
        old: JsonObject,
        candidate: JsonObject,
        admission: Admission,
        *,
        dry_run: bool,
        manager: str | None,
    ) -> JsonObject:
        """Update an object; ``manager`` None: the candidate is an apply's, with its managedFields."""
        old_meta = old["metadata"]
        name = old_meta["name"]
        if not isinstance(candidate.get("metadata"), dict):
            raise ApiError.invalid(spec, name, [FieldError.required("metadata")])
        new_meta = candidate["metadata"]
        if new_meta.get("name") != name:
            raise ApiError.invalid(
                spec,
                name,
                [
                    FieldError.invalid(
                        "metadata.name", new_meta.get("name"), "the name of the object does not match the URL"
                    )
                ],
            )
        old_namespace = old_meta.get("namespace")
        if spec.namespaced and new_meta.setdefault("namespace", old_namespace) != old_namespace:
            raise ApiError.invalid(
                spec,
                name,
                [
                    FieldError.invalid(
                        "metadata.namespace", new_meta["namespace"], "the namespace does not match the URL"
                    )
                ],
            )
        if new_meta.get("resourceVersion") not in (None, "", old_meta["resourceVersion"]):
            raise ApiError.conflict(spec, name)
        if not spec.unconditional_update and not new_meta.get("resourceVersion"):
            # As the API server words it, printing the parsed uint64 0 with Go's %#v.
            error = FieldError.invalid(
                "metadata.resourceVersion", GoValue("0x0"), "must be specified for an update"
            )
            raise ApiError.invalid(spec, name, [error])
        if "deletionTimestamp" in old_meta and set(new_meta.get("finalizers") or []) - set(
            old_meta.get("finalizers") or []
        ):
            raise ApiError.invalid(
                spec,
                name,
                [
                    FieldError.forbidden(
                        "metadata.finalizers", "no new finalizers can be added if the object is being deleted"
                    )
                ],
            )

        new = self._keep_server_fields(spec, old, candidate, admission.subresource)
        if spec.prepare is not None:
            admission.old = old
            spec.prepare(spec, new, admission)
        if bumps_generation(old, new):
            new["metadata"]["generation"] = old_meta.get("generation", 0) + 1
        if manager is not None:
            writer = fieldmanager.Manager(manager, spec.api_version, admission.subresource)
            fieldmanager.record_update(old, new, writer, self._shape(spec), time=now())
        else:  # through /status too, where `new` is otherwise the old object with the new status
            _set_or_pop(new["metadata"], "managedFields", candidate["metadata"].get("managedFields"))
        if new == old:
            return self._view(spec, old)  # a no-op write: no new resourceVersion, no event
        if _removable(new):  # the last finalizer removed
            return self._remove(spec, new, BACKGROUND, old=old, dry_run=dry_run)
        return self._commit(spec, MODIFIED, new, old, dry_run=dry_run)

    def _keep_server_fields(
        self, spec: ResourceSpec, old: JsonObject, candidate: JsonObject, subresource: str | None
    ) -> JsonObject:
        if spec.status and subresource == "status":
            # Writes through /status change only the status.
            new = copy.deepcopy(old)
            _set_or_pop(new, "status", candidate.get("status"))
            return new
        new = candidate
        for field in SYSTEM_METADATA:
            _set_or_pop(new["metadata"], field, old["metadata"].get(field))
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        if not spec.namespaced:
            new["metadata"].pop("namespace", None)
        if spec.status:
            _set_or_pop(new, "status", copy.deepcopy(old.get("status")))  # ignored on the main endpoint
        return new

    def _delete(
        self,
        spec: ResourceSpec,
        obj: JsonObject,
        propagation: str,
        *,
        grace_period: int | None = None,
        dry_run: bool,
    ) -> JsonObject:
        meta = obj["metadata"]
        if grace_period is not None and grace_period < 0:
            grace_period = 1  # as the API server: a negative grace period counts as 1 second
        if "deletionTimestamp" in meta:
            return self._shorten_deletion(spec, obj, propagation, grace_period, dry_run=dry_run)
        period = spec.grace_period(obj, grace_period) if spec.grace_period is not None else 0
        if not period and not meta.get("finalizers"):
            return self._remove(spec, obj, propagation, old=obj, dry_run=dry_run)
        new = _with_own_metadata(obj)
        # The deletionTimestamp is when the object is due to go: the end of its grace period.
        deadline = format_time(time.time() + period) if period else now()
        new["metadata"].update(deletionTimestamp=deadline, deletionGracePeriodSeconds=period)
        return self._commit(spec, MODIFIED, new, obj, dry_run=dry_run)

    def _shorten_deletion(
        self,
        spec: ResourceSpec,
        obj: JsonObject,
        propagation: str,
        grace_period: int | None,
        *,
        dry_run: bool,
    ) -> JsonObject:
        """Delete an object being deleted again: only a shorter grace period changes anything."""
        meta = obj["metadata"]
        pending = meta.get("deletionGracePeriodSeconds") or 0
        if not pending or grace_period is None or grace_period >= pending:
            return self._view(spec, obj)  # waiting for the finalizers or the grace period
        started = (parse_time(meta["deletionTimestamp"]) or time.time() + pending) - pending
        new = _with_own_metadata(obj)
        new["metadata"].update(
            deletionTimestamp=format_time(started + grace_period), deletionGracePeriodSeconds=grace_period
        )
        if _removable(new):
            return self._remove(spec, new, propagation, old=obj, dry_run=dry_run)
        return self._commit(spec, MODIFIED, new, obj, dry_run=dry_run)

    def _remove(
        self, spec: ResourceSpec, obj: JsonObject, propagation: str, *, old: JsonObject, dry_run: bool
    ) -> JsonObject:
        final = self._commit(spec, DELETED, _with_own_metadata(obj), old, dry_run=dry_run)
        if not dry_run:
            self._collect_garbage(spec, final, propagation)
        return final

    def _collect_garbage(self, owner_spec: ResourceSpec, owner: JsonObject, propagation: str) -> None:
        """
        Delete the dependents of a removed owner, recursively (as the garbage collector does in
        the background, but at once: simpler to reason about in tests). Dependents with other
        live owners, or all of them if orphaned, only lose the ownerReference. Pods are deleted
        gracefully (a Deployment's pods keep serving while they terminate); their own
        dependents go when they do.
        """
        uid = owner["metadata"]["uid"]
        owned_namespace = owner["metadata"]["name"] if owner_spec.key == NAMESPACES_KEY else None
        # Who to look at, from the indexes: the owner's dependents, and a namespace's objects.
        candidates = dict(self._dependents.get(uid, {}))
        if owned_namespace is not None:
            for key, namespaces in self._by_namespace.items():
                candidates.update(
                    ((key, (owned_namespace, name)), None) for name in namespaces.get(owned_namespace, ())
                )
        for key, object_key in candidates:
            spec = self._storage_spec(key)
            obj = self._objects[key].get(object_key)  # re-read: recursion may have changed or removed it
            if spec is None or obj is None:
                continue
            refs = obj["metadata"].get("ownerReferences") or []
            if owned_namespace is not None and object_key[0] == owned_namespace:
                self._delete(spec, obj, propagation, dry_run=False)
            elif any(ref.get("uid") == uid for ref in refs):
                remaining = [ref for ref in refs if ref.get("uid") != uid]
                if propagation == ORPHAN or any(ref.get("uid") in self._uids for ref in remaining):
                    new = _with_own_metadata(obj)
                    _set_or_pop(new["metadata"], "ownerReferences", remaining or None)
                    self._commit(spec, MODIFIED, new, obj, dry_run=False)
                else:
                    self._delete(spec, obj, propagation, dry_run=False)

    def _commit(
        self, spec: ResourceSpec, event_type: str, new: JsonObject, old: JsonObject | None, *, dry_run: bool
    ) -> JsonObject:
        """Store a change under the next resourceVersion, log it, and fan it out to watches."""
        if dry_run:
            return self._view(spec, new)
        self._resource_version += 1
        new["metadata"]["resourceVersion"] = self.resource_version
        self._store_object(spec.key, event_type, new)
        change = Change(self._resource_version, spec.key, event_type, new, old)
        if len(self._log) == self._log.maxlen:
            self._log_floor = self._log[0].resource_version
        self._log.append(change)
        for watch in list(self._watches.get(spec.key, ())):
            watch.offer(change)
        for handler in list(self._subscribers.get(spec.key, ())):
            try:
                handler(change)
            except Exception:
                logger.exception(f"A subscriber of {spec.qualified_plural} failed on a change; ignored.")
        if spec.key == CUSTOM_RESOURCE_DEFINITIONS.key:
            self._serve_crd(change)
        return self._view(spec, new)

    def _store_object(self, key: StorageKey, event_type: str, obj: JsonObject) -> None:
        """Store (or remove) an object, and keep the indexes in step."""
        object_key = _object_key(obj)
        namespace, name = object_key
        previous = self._objects[key].get(object_key)
        if previous is not None:
            self._index_owners(key, object_key, previous, add=False)
            self._index_labels(key, object_key, previous, add=False)
        if event_type == DELETED:
            self._objects[key].pop(object_key, None)
            in_namespace = self._by_namespace[key].get(namespace)
            if in_namespace is not None:
                in_namespace.pop(name, None)
                if not in_namespace:
                    del self._by_namespace[key][namespace]
            self._uids.pop(obj["metadata"]["uid"], None)
        else:
            self._objects[key][object_key] = obj
            self._by_namespace[key].setdefault(namespace, {})[name] = obj
            self._uids[obj["metadata"]["uid"]] = (key, object_key)
            self._index_owners(key, object_key, obj, add=True)
            self._index_labels(key, object_key, obj, add=True)

    def _index_labels(self, key: StorageKey, object_key: ObjectKey, obj: JsonObject, *, add: bool) -> None:
        labels = obj["metadata"].get("labels")
        if not isinstance(labels, Mapping):
            return
        index = self._by_label[key]
        for label, value in labels.items():
            if not isinstance(value, str):
                continue  # no selector value (a string) equals it: it is never looked up
            if add:
                index.setdefault((label, value), {})[object_key] = obj
            elif (labelled := index.get((label, value))) is not None:
                labelled.pop(object_key, None)
                if not labelled:
                    del index[label, value]

    def _index_owners(self, key: StorageKey, object_key: ObjectKey, obj: JsonObject, *, add: bool) -> None:
        for ref in obj["metadata"].get("ownerReferences") or []:
            owner = ref.get("uid") if isinstance(ref, Mapping) else None
            if not isinstance(owner, str):
                continue
            if add:
                self._dependents.setdefault(owner, {})[key, object_key] = None
            elif (dependents := self._dependents.get(owner)) is not None:
                dependents.pop((key, object_key), None)
                if not dependents:
                    del self._dependents[owner]

    def _replay(
        self,
        spec: ResourceSpec,
        since: str | None,
        send_initial_events: bool,
        namespace: str | None,
        label_selector: selectors.LabelSelector,
    ) -> builtins.list[Change]:
        """The events a new watch starts with: either the current state, or the log's tail."""
        if since in (None, "", "0") or send_initial_events:
            changes = [
                Change(self._resource_version, spec.key, ADDED, obj, replayed=True)
                for obj in self._in_scope(spec, namespace, label_selector)
            ]
            if send_initial_events:
                bookmark = {
                    "kind": spec.kind,
                    "apiVersion": spec.api_version,
                    "metadata": {
                        "resourceVersion": self.resource_version,
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                }
                changes.append(Change(self._resource_version, spec.key, BOOKMARK, bookmark, replayed=True))
            return changes
        try:
            since_rv = int(since)
        except ValueError:
            raise ApiError.bad_request(f"invalid resourceVersion: {since!r}") from None
        if since_rv < self._log_floor:
            raise ApiError.gone(f"too old resource version: {since_rv} ({self._log_floor})")
        # From the end: a watch resumes from a recent resourceVersion, the log holds many older.
        tail: builtins.list[Change] = []
        for change in reversed(self._log):
            if change.resource_version <= since_rv:
                break
            if change.key == spec.key:
                tail.append(change)
        tail.reverse()
        return tail

    def _modify_scale(
        self,
        spec: ResourceSpec,
        obj: JsonObject,
        change: Callable[[JsonObject], JsonObject],
        *,
        dry_run: bool,
        manager: str,
    ) -> JsonObject:
        assert spec.scale is not None  # guaranteed by _resolve_subresource()
        scale = change(self._scale_of(spec, obj))
        replicas = scale.get("spec", {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError.invalid(
                spec,
                obj["metadata"]["name"],
                [FieldError.invalid("spec.replicas", replicas, "must be greater than or equal to 0")],
            )
        candidate = self._output(spec, obj)
        candidate["metadata"]["resourceVersion"] = scale.get("metadata", {}).get("resourceVersion")
        _set_path(candidate, spec.scale.spec_replicas_path, replicas)
        updated = self._update(
            spec, obj, candidate, Admission("update", "scale"), dry_run=dry_run, manager=manager
        )
        return self._scale_of(spec, updated)

    def _scale_of(self, spec: ResourceSpec, obj: JsonObject) -> JsonObject:
        assert spec.scale is not None  # guaranteed by _resolve_subresource()
        selector = _get_path(obj, spec.scale.label_selector_path) if spec.scale.label_selector_path else None
        if isinstance(selector, Mapping):
            selector = selectors.format_label_selector(selectors.label_selector_from_dict(selector))
        meta = obj["metadata"]
        status: JsonObject = {"replicas": _get_path(obj, spec.scale.status_replicas_path) or 0}
        if selector:
            status["selector"] = selector
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                key: meta[key]
                for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if key in meta
            },
            "spec": {"replicas": _get_path(obj, spec.scale.spec_replicas_path) or 0},
            "status": status,
        }

    def _serve_crd(self, change: Change) -> None:
        """Make a CRD's resource served (or not) as soon as the CRD is written (or deleted)."""
        name = change.obj["metadata"]["name"]
        served = self._crd_resources.pop(name, [])
        if change.type == DELETED and served:
            # Custom objects die with their CRD; watchers see them DELETED while still served.
            storage = min(served, key=lambda s: version_priority(s.version))
            for obj in list(self._objects[storage.key].values()):
                self._remove(storage, obj, BACKGROUND, old=obj, dry_run=False)
        for spec in served:
            self.unregister(spec)
        if change.type != DELETED:
            self._crd_resources[name] = resources_from_crd(change.obj)
            for spec in self._crd_resources[name]:
                self.register(spec)


def _apply_configuration(spec: ResourceSpec, name: str, config: Any) -> JsonObject:
    """An apply's configuration, checked as the API server checks it: a whole object of the kind."""
    if not isinstance(config, Mapping) or not isinstance(config.get("metadata", {}), Mapping):
        raise ApiError.bad_request("the body of the request must be an object with metadata")
    for field in ("apiVersion", "kind"):
        if not config.get(field):
            raise ApiError.bad_request(
                f"Object '{field[0].upper()}{field[1:]}' is missing in '{json.dumps(config)}'"
            )
    if config["kind"] != spec.kind:
        raise ApiError.bad_request(
            f"the kind of the object ({config['kind']}) does not match the resource ({spec.kind})"
        )
    meta = dict(config.get("metadata") or {})
    if meta.setdefault("name", name) != name:
        raise ApiError.bad_request(
            f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
        )
    return {**config, "metadata": meta}


def _removable(obj: JsonObject) -> bool:
    """Whether an object being deleted is due to go: no finalizers left and no grace period."""
    meta = obj["metadata"]
    return (
        "deletionTimestamp" in meta
        and not meta.get("finalizers")
        and not meta.get("deletionGracePeriodSeconds")
    )


def _object_key(obj: JsonObject) -> ObjectKey:
    return obj["metadata"].get("namespace"), obj["metadata"]["name"]


def _with_own_metadata(obj: JsonObject) -> JsonObject:
    """
    A new version of a stored object whose metadata the caller will change (and only that): the
    rest is shared with the stored object, which nothing changes in place.
    """
    return {**obj, "metadata": dict(obj["metadata"])}


def _handed(obj: JsonObject, shared: bool) -> JsonObject:
    """What a public method returns: the store's object if the caller only reads it, else a copy."""
    return obj if shared else copy.deepcopy(obj)


def _sort_key(item: tuple[tuple[str | None, str], JsonObject]) -> tuple[str, str]:
    (namespace, name), _ = item
    return namespace or "", name


def _set_or_pop(obj: JsonObject, key: str, value: Any) -> None:
    if value is None:
        obj.pop(key, None)
    else:
        obj[key] = value


def _get_path(obj: Mapping[str, Any], path: str) -> Any:
    current: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def _set_path(obj: JsonObject, path: str, value: Any) -> None:
    *parents, last = path.strip(".").split(".")
    current = obj
    for part in parents:
        current = current.setdefault(part, {})
    current[last] = value


def _label_selector(selector: str | selectors.LabelSelector | None) -> selectors.LabelSelector:
    if isinstance(selector, selectors.LabelSelector):
        return selector
    try:
        return selectors.parse_label_selector(selector)
    except selectors.SelectorError as e:
        raise ApiError.bad_request(f"unable to parse requirement: {e}") from e


def _field_selector(selector: str | selectors.FieldSelector | None) -> selectors.FieldSelector:
    if isinstance(selector, selectors.FieldSelector):
        return selector
    try:
        return selectors.parse_field_selector(selector)
    except selectors.SelectorError as e:
        raise ApiError.bad_request(str(e)) from e
