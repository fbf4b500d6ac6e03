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

All methods must be called on one event loop; one ``asyncio.Lock`` serialises the writes.
"""

import asyncio
import builtins  # Store.list() shadows the builtin in the class body's annotations
import collections
import copy
import dataclasses
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import kmock

from sluice_sandbox import patching, selectors
from sluice_sandbox.crds import CUSTOM_RESOURCE_DEFINITIONS, resources_from_crd
from sluice_sandbox.errors import ApiError, FieldError
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

# Metadata that only the server manages: client-sent values are ignored on every write.
_SYSTEM_METADATA = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "resourceVersion",
    "selfLink",
)

NAMESPACES_KEY = ("", "namespaces")

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


@dataclasses.dataclass(frozen=True)
class Change:
    """One entry of the event log. ``old`` lets watches with selectors see objects leave."""

    resource_version: int
    key: tuple[str, str]
    type: str
    obj: JsonObject
    old: JsonObject | None = None


class Watch:
    """
    A watch-stream: ``async with store.watch(...) as events: async for event in events: ...``.

    Events are dicts ``{'type': ..., 'object': ...}`` exactly as sent in HTTP watch-streams.
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
        self._namespace = namespace
        self._since = resource_version
        self._label_selector = label_selector
        self._field_selector = field_selector
        self._send_initial_events = send_initial_events
        self._timeout = timeout
        self._deadline: float | None = None
        self._backlog: collections.deque[Change] = collections.deque()
        self._queue: asyncio.Queue[Change | None] = asyncio.Queue()

    async def __aenter__(self) -> Self:
        if self._timeout is not None:
            self._deadline = asyncio.get_running_loop().time() + self._timeout
        backlog = await self._store._subscribe(self, self._spec, self._since, self._send_initial_events)
        self._backlog.extend(backlog)
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
        while True:
            change = self._backlog.popleft() if self._backlog else await self._next_live()
            if change is None:
                raise StopAsyncIteration
            event = self._render(change)
            if event is not None:
                return event

    @property
    def key(self) -> tuple[str, str]:
        """The storage key of the watched resource."""
        return self._spec.key

    def offer(self, change: Change) -> None:
        if change.key == self._spec.key:
            self._queue.put_nowait(change)

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def _next_live(self) -> Change | None:
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

    def _render(self, change: Change) -> JsonObject | None:
        if change.type == BOOKMARK:
            return {"type": BOOKMARK, "object": copy.deepcopy(change.obj)}
        matches_now, matched_before = self._matches(change.obj), self._matches(change.old)
        if change.type == MODIFIED and matches_now != matched_before:
            # The object entered or left the selection: that is what the watcher sees.
            event_type = ADDED if matches_now else DELETED
        elif matches_now:
            event_type = change.type
        else:
            return None
        obj = copy.deepcopy(change.obj)
        obj["apiVersion"] = self._spec.api_version
        return {"type": event_type, "object": obj}


class Store:
    """The objects of all served resources, plus the resource registry and the event log."""

    def __init__(self, resources: Iterable[ResourceSpec] = (), *, history: int = 100_000) -> None:
        self._lock = asyncio.Lock()
        self._closed = False
        self._resource_version = 0
        self._specs: dict[tuple[str, str, str], ResourceSpec] = {}
        self._objects: dict[tuple[str, str], dict[tuple[str | None, str], JsonObject]] = (
            collections.defaultdict(dict)
        )
        self._uids: dict[str, tuple[tuple[str, str], tuple[str | None, str]]] = {}
        self._log: collections.deque[Change] = collections.deque(maxlen=history)
        self._log_floor = 0  # watches from before this resourceVersion get 410 Gone
        self._watches: set[Watch] = set()
        self._watches_changed = asyncio.Condition()
        self._crd_resources: dict[str, list[ResourceSpec]] = {}
        self._registry_version = 0
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
                return self._create(spec, crd, None, Admission("create"), dry_run=False)
            body = copy.deepcopy(dict(crd))
            body.setdefault("metadata", {}).pop("resourceVersion", None)  # replace unconditionally
            return self._update(spec, existing, body, Admission("update"), dry_run=False)

    # ----- Reading -----

    async def get(
        self, resource: ResourceRef, namespace: str | None, name: str, *, subresource: str | None = None
    ) -> JsonObject:
        spec = self._resolve_subresource(resource, subresource)
        async with self._lock:
            obj = self._find(spec, namespace, name)
            return self._scale_of(spec, obj) if subresource == "scale" else self._output(spec, obj)

    async def list(
        self,
        resource: ResourceRef,
        namespace: str | None = None,
        label_selector: str | selectors.LabelSelector | None = None,
        field_selector: str | selectors.FieldSelector | None = None,
    ) -> JsonObject:
        """A ``<Kind>List`` object, as the API returns it (``items`` & ``metadata.resourceVersion``)."""
        spec = self.resolve(resource)
        async with self._lock:
            items = self._select(
                spec, namespace, _label_selector(label_selector), _field_selector(field_selector)
            )
            return {
                "kind": f"{spec.kind}List",
                "apiVersion": spec.api_version,
                "metadata": {"resourceVersion": self.resource_version},
                "items": [self._output(spec, obj) for obj in items],
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
            await self._watches_changed.wait_for(
                lambda: sum(1 for watch in self._watches if watch.key == key) >= count
            )

    async def _subscribe(
        self, watch: Watch, spec: ResourceSpec, since: str | None, send_initial_events: bool
    ) -> builtins.list[Change]:
        """Start feeding a watch; atomically with it, get the events it must replay first."""
        async with self._lock:
            backlog = self._replay(spec, since, send_initial_events)
            self._watches.add(watch)
            if self._closed:
                watch.close()
        async with self._watches_changed:
            self._watches_changed.notify_all()
        return backlog

    def _unsubscribe(self, watch: Watch) -> None:
        self._watches.discard(watch)

    def close(self) -> None:
        """End all watch-streams (e.g. on server shutdown) and refuse to hold new ones open."""
        self._closed = True
        for watch in list(self._watches):
            watch.close()

    # ----- Writing -----

    # Writes take `field_validation` (what to do about fields a CRD's schema does not know, see
    # FieldValidation) and `warnings` (a list that collects what to tell the client).

    async def create(
        self,
        resource: ResourceRef,
        body: Mapping[str, Any],
        namespace: str | None = None,
        *,
        dry_run: bool = False,
        field_validation: FieldValidation = FieldValidation.IGNORE,
        warnings: builtins.list[str] | None = None,
    ) -> JsonObject:
        spec = self.resolve(resource)
        admission = Admission("create", field_validation=field_validation)
        async with self._lock:
            created = self._create(spec, body, namespace, admission, dry_run=dry_run)
        if warnings is not None:
            warnings.extend(admission.warnings)
        return created

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
    ) -> JsonObject:
        """PUT: the body replaces the object (or its status/scale); a stale resourceVersion is a 409."""
        if not isinstance(body, Mapping):
            raise ApiError.bad_request("the body of the request must be a JSON object")
        admission = Admission("update", subresource, field_validation)
        replaced = await self._modify(
            resource, namespace, name, lambda _: copy.deepcopy(dict(body)), admission, dry_run=dry_run
        )
        if warnings is not None:
            warnings.extend(admission.warnings)
        return replaced

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
    ) -> JsonObject:
        spec = self._resolve_subresource(resource, subresource)
        if patch_type is patching.PatchType.STRATEGIC and not spec.builtin:
            raise ApiError.unsupported_media_type(
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{patching.PatchType.JSON.value}, {patching.PatchType.MERGE.value}"
            )
        try:
            patching.check_supported(patch_type)  # before a 404 for a missing object could hide why
        except patching.UnsupportedPatchError as e:
            raise ApiError.unsupported_media_type(str(e)) from e

        def apply(current: JsonObject) -> JsonObject:
            try:
                return patching.apply_patch(patch_type, current, patch)
            except patching.UnsupportedPatchError as e:
                raise ApiError.unsupported_media_type(str(e)) from e
            except patching.PatchError as e:
                raise ApiError.unprocessable(spec, name, str(e)) from e

        admission = Admission("update", subresource, field_validation)
        patched = await self._modify(spec, namespace, name, apply, admission, dry_run=dry_run)
        if warnings is not None:
            warnings.extend(admission.warnings)
        return patched

    async def patch_status(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: patching.PatchType = patching.PatchType.MERGE,
    ) -> JsonObject:
        """Patch only the status (through ``/status`` if the resource has that subresource)."""
        spec = self.resolve(resource)
        if not spec.status and isinstance(patch, Mapping):
            patch = {"status": patch["status"]} if "status" in patch else {}
        return await self.patch(
            spec, namespace, name, patch, patch_type=patch_type, subresource="status" if spec.status else None
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
            return self._delete(
                spec, obj, propagation or BACKGROUND, grace_period=grace_period, dry_run=dry_run
            )

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
                "items": deleted,
            }

    # ----- Internals (called with the lock held) -----

    def _resolve_subresource(self, resource: ResourceRef, subresource: str | None) -> ResourceSpec:
        spec = self.resolve(resource)
        if subresource is not None and subresource not in spec.subresources:
            raise ApiError.resource_not_found()
        return spec

    def _storage_spec(self, key: tuple[str, str]) -> ResourceSpec | None:
        specs = [spec for spec in self._specs.values() if spec.key == key]
        return min(specs, key=lambda s: version_priority(s.version)) if specs else None

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
            for (obj_namespace, _), obj in sorted(self._objects[spec.key].items(), key=_sort_key)
            if namespace is None or not spec.namespaced or obj_namespace == namespace
            if label_selector.matches(obj["metadata"].get("labels"))
            if field_selector.matches(obj)
        ]

    def _output(self, spec: ResourceSpec, obj: JsonObject) -> JsonObject:
        result = copy.deepcopy(obj)
        result["apiVersion"] = spec.api_version  # the same objects are served under every version
        return result

    async def _modify(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str,
        change: Callable[[JsonObject], JsonObject],
        admission: Admission,
        *,
        dry_run: bool,
    ) -> JsonObject:
        spec = self._resolve_subresource(resource, admission.subresource)
        async with self._lock:
            old = self._find(spec, namespace, name)
            if admission.subresource == "scale":
                return self._modify_scale(spec, old, change, dry_run=dry_run)
            candidate = change(self._output(spec, old))
            return self._update(spec, old, candidate, admission, dry_run=dry_run)

    def _create(
        self,
        spec: ResourceSpec,
        body: Mapping[str, Any],
        namespace: str | None,
        admission: Admission,
        *,
        dry_run: bool,
    ) -> JsonObject:
        if not isinstance(body, Mapping) or not isinstance(body.get("metadata", {}), Mapping):
            raise ApiError.bad_request("the body of the request must be a JSON object with metadata")
        obj = copy.deepcopy(dict(body))
        meta = obj.setdefault("metadata", {})
        for field in _SYSTEM_METADATA:
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
    ) -> JsonObject:
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
        if new == old:
            return self._output(spec, old)  # a no-op write: no new resourceVersion, no event
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
        for field in _SYSTEM_METADATA:
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
        new = copy.deepcopy(obj)
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
            return self._output(spec, obj)  # waiting for the finalizers or the grace period
        started = (parse_time(meta["deletionTimestamp"]) or time.time() + pending) - pending
        new = copy.deepcopy(obj)
        new["metadata"].update(
            deletionTimestamp=format_time(started + grace_period), deletionGracePeriodSeconds=grace_period
        )
        if _removable(new):
            return self._remove(spec, new, propagation, old=obj, dry_run=dry_run)
        return self._commit(spec, MODIFIED, new, obj, dry_run=dry_run)

    def _remove(
        self, spec: ResourceSpec, obj: JsonObject, propagation: str, *, old: JsonObject, dry_run: bool
    ) -> JsonObject:
        final = self._commit(spec, DELETED, copy.deepcopy(obj), old, dry_run=dry_run)
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
        for key, objects in list(self._objects.items()):
            spec = self._storage_spec(key)
            for object_key in list(objects):
                obj = objects.get(object_key)  # re-read: recursion may have changed or removed it
                if spec is None or obj is None:
                    continue
                refs = obj["metadata"].get("ownerReferences") or []
                if owned_namespace is not None and object_key[0] == owned_namespace:
                    self._delete(spec, obj, propagation, dry_run=False)
                elif any(ref.get("uid") == uid for ref in refs):
                    remaining = [ref for ref in refs if ref.get("uid") != uid]
                    if propagation == ORPHAN or any(ref.get("uid") in self._uids for ref in remaining):
                        new = copy.deepcopy(obj)
                        _set_or_pop(new["metadata"], "ownerReferences", remaining or None)
                        self._commit(spec, MODIFIED, new, obj, dry_run=False)
                    else:
                        self._delete(spec, obj, propagation, dry_run=False)

    def _commit(
        self, spec: ResourceSpec, event_type: str, new: JsonObject, old: JsonObject | None, *, dry_run: bool
    ) -> JsonObject:
        """Store a change under the next resourceVersion, log it, and fan it out to watches."""
        if dry_run:
            return self._output(spec, new)
        self._resource_version += 1
        new["metadata"]["resourceVersion"] = self.resource_version
        meta = new["metadata"]
        object_key = _object_key(new)
        if event_type == DELETED:
            self._objects[spec.key].pop(object_key, None)
            self._uids.pop(meta["uid"], None)
        else:
            self._objects[spec.key][object_key] = new
            self._uids[meta["uid"]] = (spec.key, object_key)
        change = Change(self._resource_version, spec.key, event_type, new, old)
        if len(self._log) == self._log.maxlen:
            self._log_floor = self._log[0].resource_version
        self._log.append(change)
        for watch in list(self._watches):
            watch.offer(change)
        if spec.key == CUSTOM_RESOURCE_DEFINITIONS.key:
            self._serve_crd(change)
        return self._output(spec, new)

    def _replay(
        self, spec: ResourceSpec, since: str | None, send_initial_events: bool
    ) -> builtins.list[Change]:
        """The events a new watch starts with: either the current state, or the log's tail."""
        if since in (None, "", "0") or send_initial_events:
            changes = [
                Change(self._resource_version, spec.key, ADDED, obj)
                for _, obj in sorted(self._objects[spec.key].items(), key=_sort_key)
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
                changes.append(Change(self._resource_version, spec.key, BOOKMARK, bookmark))
            return changes
        try:
            since_rv = int(since)
        except ValueError:
            raise ApiError.bad_request(f"invalid resourceVersion: {since!r}") from None
        if since_rv < self._log_floor:
            raise ApiError.gone(f"too old resource version: {since_rv} ({self._log_floor})")
        return [
            change for change in self._log if change.resource_version > since_rv and change.key == spec.key
        ]

    def _modify_scale(
        self,
        spec: ResourceSpec,
        obj: JsonObject,
        change: Callable[[JsonObject], JsonObject],
        *,
        dry_run: bool,
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
        return self._scale_of(spec, self._update(spec, obj, candidate, Admission("update"), dry_run=dry_run))

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


def _removable(obj: JsonObject) -> bool:
    """Whether an object being deleted is due to go: no finalizers left and no grace period."""
    meta = obj["metadata"]
    return (
        "deletionTimestamp" in meta
        and not meta.get("finalizers")
        and not meta.get("deletionGracePeriodSeconds")
    )


def _object_key(obj: JsonObject) -> tuple[str | None, str]:
    return obj["metadata"].get("namespace"), obj["metadata"]["name"]


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
