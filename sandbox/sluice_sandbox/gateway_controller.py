"""The simulated Gateway controller: it attaches HTTPRoutes to the sandbox's Gateways, and says so.

A real Gateway implementation (Envoy Gateway, Istio, NGINX...) owns the Gateways whose
GatewayClass names its ``controllerName``, and reports on every HTTPRoute that names one of them
as a parent: ``status.parents[]`` gets one entry per such parentRef, with the ``controllerName``,
the ``parentRef`` and two conditions, each with ``observedGeneration`` = the route's generation
(https://gateway-api.sigs.k8s.io/reference/spec/#routeparentstatus):

- ``Accepted``: ``True`` (reason ``Accepted``) when a listener of the Gateway takes the route;
  ``False`` with ``NoMatchingParent`` when the Gateway does not exist or has no listener of the
  parentRef's ``sectionName``/``port``, ``NotAllowedByListeners`` when no such listener admits
  HTTPRoutes from the route's namespace (``allowedRoutes``), ``NoMatchingListenerHostname`` when
  none serves the route's hostnames.
- ``ResolvedRefs``: ``True`` (reason ``ResolvedRefs``) when every backendRef names a Service that
  exists; ``False`` with ``BackendNotFound`` (no such Service), ``RefNotPermitted`` (a Service of
  another namespace: that needs a ReferenceGrant, which the sandbox does not serve) or
  ``InvalidKind`` (a backend that is no Service).

A parentRef that is no Gateway, or names a Gateway of another controller's class (or of no class
that exists), is left alone, as real controllers leave it; a parentRef to a Gateway that does not
exist at all is reported (``NoMatchingParent``), so that a typo shows. Entries other controllers
wrote are kept as they are. The Gateways and the GatewayClass of this controller get their own
conditions too (``Accepted`` and ``Programmed``, ``Accepted``).

The decisions are pure (:func:`route_status`, :func:`gateway_status`, :func:`class_status`);
:class:`GatewayController` follows the store with :meth:`Store.subscribe` and decides again for a
route whenever the route, one of its Gateways (or their class), one of its backend Services
(created or deleted) or its namespace's labels change. It writes a status only when it differs
(not counting ``lastTransitionTime``), through the status subresource, conditional on the
resourceVersion it decided on: its own writes come back as changes that need no write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from sluice_sandbox.gateway import CONTROLLER_NAME, GROUP, VERSION
from sluice_sandbox.resources import now
from sluice_sandbox.selectors import SelectorError, label_selector_from_dict
from sluice_sandbox.store import DELETED, ApiError, Change, JsonObject, StorageKey, Store
from sluice_sandbox.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

HTTPROUTES = f"{GROUP}/{VERSION}/httproutes"
GATEWAYS = f"{GROUP}/{VERSION}/gateways"
GATEWAYCLASSES = f"{GROUP}/{VERSION}/gatewayclasses"
# Followed by storage key: the Gateway API CRDs may be installed after the controller starts.
_ROUTES_KEY: StorageKey = (GROUP, "httproutes")
_GATEWAYS_KEY: StorageKey = (GROUP, "gateways")
_CLASSES_KEY: StorageKey = (GROUP, "gatewayclasses")
_SERVICES_KEY: StorageKey = ("", "services")
_NAMESPACES_KEY: StorageKey = ("", "namespaces")

ROUTE_KIND = "HTTPRoute"
# The protocols whose listeners take HTTPRoutes when `allowedRoutes.kinds` does not say.
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTPS"})
# At most this many parents in a route's status (the upstream schema's maxItems).
MAX_PARENTS = 32
# The label the API server puts on every namespace: selectors of `allowedRoutes` may use it.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

Key = tuple[str, str]  # (namespace, name) of a route, a Gateway or a Service


# ----- The pure part: what the controller says about a route -----


@dataclass(frozen=True)
class GatewayWorld:
    """What the controller decides from: the cluster's Gateways, classes, Services and namespaces."""

    gateways: Mapping[Key, Mapping[str, Any]] = field(default_factory=dict)
    classes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    services: AbstractSet[Key] = frozenset()
    namespace_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    controller_name: str = CONTROLLER_NAME

    def owns(self, gateway: Mapping[str, Any]) -> bool:
        """Whether the Gateway's class exists and is this controller's."""
        class_name = (gateway.get("spec") or {}).get("gatewayClassName")
        gateway_class = self.classes.get(class_name) if isinstance(class_name, str) else None
        return gateway_class is not None and owns_class(gateway_class, self.controller_name)


@dataclass(frozen=True)
class Verdict:
    """One condition's truth, reason and message."""

    ok: bool
    reason: str
    message: str


def owns_class(gateway_class: Mapping[str, Any], controller_name: str = CONTROLLER_NAME) -> bool:
    return (gateway_class.get("spec") or {}).get("controllerName") == controller_name


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = _meta(obj)
    return meta.get("namespace") or "", meta.get("name") or ""


def generation_of(obj: Mapping[str, Any]) -> int:
    return int(_meta(obj).get("generation") or 0)


def parent_gateway(route_namespace: str, parent_ref: Mapping[str, Any]) -> Key | None:
    """The Gateway a parentRef names (by the API's defaults), or None when it names something else."""
    if parent_ref.get("group", GROUP) != GROUP or parent_ref.get("kind", "Gateway") != "Gateway":
        return None
    return parent_ref.get("namespace") or route_namespace, str(parent_ref.get("name") or "")


def backend_services(route: Mapping[str, Any]) -> Iterator[Key]:
    """The Services the route's backendRefs name (whatever their namespace)."""
    namespace = key_of(route)[0]
    for rule in (route.get("spec") or {}).get("rules") or []:
        for backend in rule.get("backendRefs") or []:
            if backend.get("group", "") == "" and backend.get("kind", "Service") == "Service":
                yield backend.get("namespace") or namespace, str(backend.get("name") or "")


def hostnames_intersect(listener: str | None, route: str) -> bool:
    """Whether a listener's hostname and a route's have a host in common (either may be a ``*.`` wildcard)."""
    if not listener or listener == route:
        return True
    if listener.startswith("*.") and route.startswith("*."):
        return route[1:].endswith(listener[1:]) or listener[1:].endswith(route[1:])
    if listener.startswith("*."):
        return route.endswith(listener[1:])
    if route.startswith("*."):
        return listener.endswith(route[1:])
    return False


def _admits_kind(listener: Mapping[str, Any]) -> bool:
    kinds = (listener.get("allowedRoutes") or {}).get("kinds")
    if kinds:
        return any(k.get("group", GROUP) == GROUP and k.get("kind") == ROUTE_KIND for k in kinds)
    return listener.get("protocol") in HTTP_PROTOCOLS


def _admits_namespace(
    listener: Mapping[str, Any], gateway_namespace: str, route_namespace: str, world: GatewayWorld
) -> bool:
    namespaces = (listener.get("allowedRoutes") or {}).get("namespaces") or {}
    source = namespaces.get("from", "Same")
    if source == "All":
        return True
    if source == "Selector":
        labels = {**world.namespace_labels.get(route_namespace, {}), NAMESPACE_NAME_LABEL: route_namespace}
        try:
            return label_selector_from_dict(namespaces.get("selector") or {}).matches(labels)
        except SelectorError:
            return False
    return route_namespace == gateway_namespace


def acceptance(
    route: Mapping[str, Any], parent_ref: Mapping[str, Any], world: GatewayWorld
) -> Verdict | None:
    """The route's ``Accepted`` condition for one parentRef; None when the parent is not ours to judge."""
    route_namespace = key_of(route)[0]
    gateway_key = parent_gateway(route_namespace, parent_ref)
    if gateway_key is None:
        return None
    name = f"Gateway {gateway_key[0]}/{gateway_key[1]}"
    gateway = world.gateways.get(gateway_key)
    if gateway is None:
        return Verdict(False, "NoMatchingParent", f"{name} not found")
    if not world.owns(gateway):
        return None
    listeners = (gateway.get("spec") or {}).get("listeners") or []
    section, port = parent_ref.get("sectionName"), parent_ref.get("port")
    if section is not None:
        listeners = [listener for listener in listeners if listener.get("name") == section]
        if not listeners:
            return Verdict(False, "NoMatchingParent", f"{name} has no listener named {section}")
    if port is not None:
        listeners = [listener for listener in listeners if listener.get("port") == port]
        if not listeners:
            return Verdict(False, "NoMatchingParent", f"{name} has no listener on port {port}")
    listeners = [
        listener
        for listener in listeners
        if _admits_kind(listener) and _admits_namespace(listener, gateway_key[0], route_namespace, world)
    ]
    if not listeners:
        return Verdict(
            False,
            "NotAllowedByListeners",
            f"no listener of {name} admits HTTPRoutes from namespace {route_namespace}",
        )
    hostnames = (route.get("spec") or {}).get("hostnames") or []
    if hostnames and not any(
        hostnames_intersect(listener.get("hostname"), hostname)
        for listener in listeners
        for hostname in hostnames
    ):
        return Verdict(
            False,
            "NoMatchingListenerHostname",
            f"no listener of {name} serves the route's hostnames ({', '.join(hostnames)})",
        )
    return Verdict(True, "Accepted", f"Route is accepted by {name}")


def resolved_refs(route: Mapping[str, Any], world: GatewayWorld) -> Verdict:
    """The route's ``ResolvedRefs`` condition (the same for every parent): the first kind of problem found."""
    namespace = key_of(route)[0]
    problems: dict[str, list[str]] = {}
    for rule in (route.get("spec") or {}).get("rules") or []:
        for backend in rule.get("backendRefs") or []:
            name = backend.get("name") or ""
            group, kind = backend.get("group", ""), backend.get("kind", "Service")
            target = backend.get("namespace") or namespace
            if (group, kind) != ("", "Service"):
                problems.setdefault("InvalidKind", []).append(
                    f"backendRef {name}: kind {group or 'core'}/{kind} is not supported"
                )
            elif target != namespace:
                problems.setdefault("RefNotPermitted", []).append(
                    f"backendRef {name}: Service {target}/{name} is in another namespace "
                    "and no ReferenceGrant allows it"
                )
            elif (target, name) not in world.services:
                problems.setdefault("BackendNotFound", []).append(
                    f"backendRef {name}: Service {target}/{name} not found"
                )
    for reason, messages in problems.items():
        return Verdict(False, reason, "; ".join(messages))
    return Verdict(True, "ResolvedRefs", "Resolved all the Object references for the Route")


def _condition(
    kind: str, verdict: Verdict, generation: int, old: Mapping[str, Any] | None, at: str
) -> dict[str, Any]:
    status = "True" if verdict.ok else "False"
    # lastTransitionTime moves only when the truth flips, as metav1.Condition asks.
    since = old.get("lastTransitionTime") if old and old.get("status") == status else None
    return {
        "type": kind,
        "status": status,
        "reason": verdict.reason,
        "message": verdict.message,
        "observedGeneration": generation,
        "lastTransitionTime": since or at,
    }


def _conditions_by_type(entry: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    return {c.get("type", ""): c for c in (entry or {}).get("conditions") or []}


def _parent_identity(route_namespace: str, parent_ref: Mapping[str, Any]) -> tuple[Any, ...]:
    """A parentRef with the API's defaults: two refs to the same parent (and section, port) are equal."""
    return (
        parent_ref.get("group", GROUP),
        parent_ref.get("kind", "Gateway"),
        parent_ref.get("namespace") or route_namespace,
        parent_ref.get("name"),
        parent_ref.get("sectionName"),
        parent_ref.get("port"),
    )


def route_parents(route: Mapping[str, Any], world: GatewayWorld, at: str) -> list[dict[str, Any]]:
    """This controller's ``status.parents`` entries for the route, one per parentRef it judges."""
    namespace = key_of(route)[0]
    generation = generation_of(route)
    previous = {
        _parent_identity(namespace, entry.get("parentRef") or {}): entry
        for entry in (route.get("status") or {}).get("parents") or []
        if entry.get("controllerName") == world.controller_name
    }
    refs = resolved_refs(route, world)
    entries: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    for parent_ref in (route.get("spec") or {}).get("parentRefs") or []:
        identity = _parent_identity(namespace, parent_ref)
        accepted = acceptance(route, parent_ref, world)
        if accepted is None or identity in seen:
            continue
        seen.add(identity)
        old = _conditions_by_type(previous.get(identity))
        entries.append(
            {
                # With the defaults the API server writes, so that what is stored equals what was decided.
                "parentRef": {"group": GROUP, "kind": "Gateway", **parent_ref},
                "controllerName": world.controller_name,
                "conditions": [
                    _condition("Accepted", accepted, generation, old.get("Accepted"), at),
                    _condition("ResolvedRefs", refs, generation, old.get("ResolvedRefs"), at),
                ],
            }
        )
    return entries


def _without_times(value: Any) -> Any:
    """A status with every lastTransitionTime left out: what a change must change to be written."""
    if isinstance(value, Mapping):
        return {k: _without_times(v) for k, v in value.items() if k != "lastTransitionTime"}
    if isinstance(value, list):
        return [_without_times(item) for item in value]
    return value


def route_status(
    route: Mapping[str, Any], world: GatewayWorld, at: str | None = None
) -> dict[str, Any] | None:
    """The route's new status (this controller's parents replaced, others' kept), or None if unchanged."""
    status = dict(route.get("status") or {})
    others = [
        entry for entry in status.get("parents") or [] if entry.get("controllerName") != world.controller_name
    ]
    ours = route_parents(route, world, at or now())
    new = {**status, "parents": [*others, *ours][:MAX_PARENTS]}
    if not ours and len(others) == len(status.get("parents") or []):
        return None  # nothing of ours, before or now
    return None if _without_times(new) == _without_times(route.get("status") or {}) else new


def _own_conditions(
    obj: Mapping[str, Any], wanted: Iterable[tuple[str, Verdict]], at: str | None
) -> dict[str, Any] | None:
    status = dict(obj.get("status") or {})
    old = _conditions_by_type(status)
    generation = generation_of(obj)
    conditions = [
        _condition(kind, verdict, generation, old.get(kind), at or now()) for kind, verdict in wanted
    ]
    new = {**status, "conditions": conditions}
    return None if _without_times(new) == _without_times(obj.get("status") or {}) else new


def gateway_status(
    gateway: Mapping[str, Any], world: GatewayWorld, at: str | None = None
) -> dict[str, Any] | None:
    """A Gateway of this controller's: Accepted and Programmed (None if so already, or not ours)."""
    if not world.owns(gateway):
        return None
    wanted = [
        ("Accepted", Verdict(True, "Accepted", "Gateway is accepted")),
        ("Programmed", Verdict(True, "Programmed", "Gateway is programmed")),
    ]
    return _own_conditions(gateway, wanted, at)


def class_status(
    gateway_class: Mapping[str, Any], controller_name: str = CONTROLLER_NAME, at: str | None = None
) -> dict[str, Any] | None:
    """A GatewayClass of this controller's: Accepted (None if so already, or not ours)."""
    if not owns_class(gateway_class, controller_name):
        return None
    return _own_conditions(
        gateway_class, [("Accepted", Verdict(True, "Accepted", "GatewayClass is accepted"))], at
    )


# ----- The loop -----


def _add(index: dict[Key, set[Key]], keys: Iterable[Key], value: Key) -> None:
    for key in keys:
        index.setdefault(key, set()).add(value)


def _remove(index: dict[Key, set[Key]], keys: Iterable[Key], value: Key) -> None:
    for key in keys:
        values = index.get(key)
        if values is not None:
            values.discard(value)
            if not values:
                del index[key]


class GatewayController:
    """
    Keeps the status of HTTPRoutes, Gateways and GatewayClasses as the module docs say.

    It follows the store with :meth:`Store.subscribe` into indexes (the store's own objects,
    never changed): which routes name each Gateway and each Service, so that a Gateway or a
    Service that comes or goes re-decides only the routes that name it.
    """

    def __init__(self, store: Store, controller_name: str = CONTROLLER_NAME) -> None:
        self._store = store
        self._controller_name = controller_name
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        # Set while nothing is left to decide: what tests wait for before checking that nothing was written.
        self.idle = asyncio.Event()
        self._unsubscribe: list[Callable[[], None]] = []
        self._routes: dict[Key, JsonObject] = {}
        self._gateways: dict[Key, JsonObject] = {}
        self._classes: dict[str, JsonObject] = {}
        self._services: set[Key] = set()
        self._namespace_labels: dict[str, Mapping[str, str]] = {}
        self._route_parents: dict[Key, set[Key]] = {}  # Gateway -> the routes naming it
        self._route_backends: dict[Key, set[Key]] = {}  # Service -> the routes naming it
        self._dirty_routes: set[Key] = set()
        self._dirty_gateways: set[Key] = set()
        self._dirty_classes: set[str] = set()
        self.writes = 0  # status writes made: what the tests check stays still when nothing changes

    @property
    def world(self) -> GatewayWorld:
        return GatewayWorld(
            self._gateways, self._classes, self._services, self._namespace_labels, self._controller_name
        )

    async def start(self) -> None:
        self._follow()
        self._wake()  # a first pass, even over an empty store: it ends idle
        self._task = asyncio.create_task(self._work(), name="sandbox-gateway-controller")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    def _follow(self) -> None:
        """Follow the store (once; again after a stop, into fresh indexes)."""
        if self._unsubscribe:
            return
        self._routes, self._gateways, self._classes = {}, {}, {}
        self._services, self._namespace_labels = set(), {}
        self._route_parents, self._route_backends = {}, {}
        self._unsubscribe = [
            self._store.subscribe(_CLASSES_KEY, self._on_class),
            self._store.subscribe(_GATEWAYS_KEY, self._on_gateway),
            self._store.subscribe(_SERVICES_KEY, self._on_service),
            self._store.subscribe(_NAMESPACES_KEY, self._on_namespace),
            self._store.subscribe(_ROUTES_KEY, self._on_route),
        ]

    # The handlers run inside the store's writes: they only index and mark, never call the store.

    def _on_route(self, change: Change) -> None:
        key = key_of(change.obj)
        old = self._routes.pop(key, None)
        if old is not None:
            _remove(self._route_parents, self._parents_of(old), key)
            _remove(self._route_backends, backend_services(old), key)
        if change.type != DELETED:
            self._routes[key] = change.obj
            _add(self._route_parents, self._parents_of(change.obj), key)
            _add(self._route_backends, backend_services(change.obj), key)
            self._mark_routes([key])

    def _parents_of(self, route: Mapping[str, Any]) -> list[Key]:
        namespace = key_of(route)[0]
        refs = (route.get("spec") or {}).get("parentRefs") or []
        return [key for ref in refs if (key := parent_gateway(namespace, ref)) is not None]

    def _on_gateway(self, change: Change) -> None:
        key = key_of(change.obj)
        if change.type == DELETED:
            self._gateways.pop(key, None)
        else:
            self._gateways[key] = change.obj
            self._dirty_gateways.add(key)
        self._mark_routes(self._route_parents.get(key, ()))
        self._wake()

    def _on_class(self, change: Change) -> None:
        name = key_of(change.obj)[1]
        if change.type == DELETED:
            self._classes.pop(name, None)
        else:
            self._classes[name] = change.obj
            self._dirty_classes.add(name)
        for key, gateway in self._gateways.items():
            if (gateway.get("spec") or {}).get("gatewayClassName") == name:
                self._dirty_gateways.add(key)
                self._mark_routes(self._route_parents.get(key, ()))
        self._wake()

    def _on_service(self, change: Change) -> None:
        key = key_of(change.obj)
        exists = change.type != DELETED
        if exists == (key in self._services):
            return  # only a Service's existence matters to a route
        if exists:
            self._services.add(key)
        else:
            self._services.discard(key)
        self._mark_routes(self._route_backends.get(key, ()))

    def _on_namespace(self, change: Change) -> None:
        name = key_of(change.obj)[1]
        labels = {} if change.type == DELETED else (_meta(change.obj).get("labels") or {})
        if self._namespace_labels.get(name, {}) == labels:
            return
        self._namespace_labels[name] = labels
        # Only listeners with a namespace selector look at labels: re-decide the routes of the namespace.
        self._mark_routes([key for key in self._routes if key[0] == name])

    def _mark_routes(self, keys: Iterable[Key]) -> None:
        self._dirty_routes.update(keys)
        self._wake()

    def _wake(self) -> None:
        self.idle.clear()
        self._wakeup.set()

    async def _work(self) -> None:
        # One worker: changes that arrive while it writes (its own writes among them) fold into one more pass.
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._dirty_classes or self._dirty_gateways or self._dirty_routes:
                if self._dirty_classes:
                    name = self._dirty_classes.pop()
                    await self._sync(GATEWAYCLASSES, None, name, self._classes.get(name), self._class_status)
                elif self._dirty_gateways:
                    gateway_key = self._dirty_gateways.pop()
                    gateway = self._gateways.get(gateway_key)
                    await self._sync(GATEWAYS, *gateway_key, gateway, self._gateway_status)
                else:
                    route_key = self._dirty_routes.pop()
                    await self._sync(HTTPROUTES, *route_key, self._routes.get(route_key), self._route_status)
            self.idle.set()

    def _class_status(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        return class_status(obj, self._controller_name)

    def _gateway_status(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        return gateway_status(obj, self.world)

    def _route_status(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        return route_status(obj, self.world)

    async def _sync(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        obj: JsonObject | None,
        decide: Callable[[Mapping[str, Any]], dict[str, Any] | None],
    ) -> None:
        if obj is None:
            return  # gone meanwhile
        try:
            status = decide(obj)
            if status is None:
                return
            # Conditional on the resourceVersion decided on: a 409 means a newer object is on its way
            # through the subscription, and with it another pass.
            await self._store.replace(
                resource,
                namespace or None,
                name,
                {**obj, "status": status},
                subresource="status",
                shared=True,
            )
            self.writes += 1
        except ApiError as error:
            if error.status not in (404, 409):
                logger.exception(f"The Gateway controller could not write the status of {resource} {name}.")
        except Exception:
            logger.exception(f"The Gateway controller failed on {resource} {namespace}/{name}.")
