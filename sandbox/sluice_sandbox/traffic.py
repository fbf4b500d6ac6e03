"""The traffic simulator: a steady stream of synthetic requests to every Service behind a route.

Every tick it looks at the HTTPRoutes, the Services and the pods, and sets the metrics exporter's
traffic of each Service a route sends to: the route's requests per second times the Service's
weight share, served by the Service's ready pods, each behaving as its pod spec says
(:mod:`sluice_sandbox.behaviour`). Pods of several versions behind one Service serve in
proportion to their count, each version with its own errors and latency. It also sets what the
gateway answers on each route (:func:`gateway_traffic`): what users see.

The pure functions (:func:`service_traffic`, :func:`gateway_traffic`) say what the traffic is;
the simulator gets the same results from a :class:`TrafficIndex` that it keeps current change by
change, so that a tick costs what changed rather than every Service against every pod.

Decisions, and why:

- A route that Gateway controllers reported on (``status.parents``) but none accepted gets no
  requests: no gateway serves it (:func:`refused`; the sandbox's Gateway controller is
  :mod:`sluice_sandbox.gateway_controller`). Its gateway series stay, at zero.
- Each route gets ``rps`` requests per second, split evenly between its rules (real traffic
  depends on the rules' matches; Sluice writes one rule, a route it adopted keeps its owner's)
  and within a rule by the backendRefs' weights. Every route counts, Sluice's or not. A backend
  that is no local Service (another kind) takes its share, unsimulated.
- Header routes: a share of the requests (:class:`MarkedRequests`, by default 10% carrying
  ``x-canary: always``) carries a header. Rules with header matches get only such requests: the
  one whose match (all its headers equal, exactly, with no query parameter asked) has the most
  header matches wins, as Gateway API precedence says; the marked requests no such rule matches,
  and all the others, are split between the rules without header matches as above.
- Mirroring: a rule's ``RequestMirror`` filter sends a copy of its ``percent`` (or ``fraction``;
  neither: all) of the rule's requests to the mirror's Service too. The copies count in that
  Service's own metrics (analysis sees how the canary answers them) but never at the gateway:
  their answers are discarded, no user sees them, and they give the Service no weight.
- The per-Service metrics are the application's own, as if its pods exported them: a Service
  without ready pods (or a backend Service that does not exist) serves nothing, so it counts
  nothing. The gateway answers those requests 503, and its own counters, per route and status
  code, count them (``gateway_http_requests_total``); the requests a Service serves count there
  with the code its pods answer (the same 2xx/5xx split as the Service's own counters). A
  backend of another kind is not simulated: the gateway counts nothing for it either. The
  serving history (:func:`outages`) tells when, and which Service.
- An Istio VirtualService is routed as the HTTPRoute it amounts to
  (:func:`virtual_service_as_route`): if one of its ``hosts`` names a Service of its namespace,
  it gets ``rps`` requests per second, split by its HTTP routes' destination weights (each
  route a rule, with its header matches and mirrors, up to the first route without a match),
  counted in the same per-Service series and in gateway series under its own name (the
  gateway standing for the mesh's sidecars). An HTTPRoute and a VirtualService of the same
  name in one namespace share one route entry: the last written wins (Sluice's Rollouts use
  one traffic provider each, so they never have both).
- A route keeps its gateway series for as long as it exists, at zero traffic when all its
  weights are 0, for the same reason as a Service's (next point).
- A Service that gets no requests (weight 0, no ready pods, no longer routed) keeps its series,
  at zero traffic, for as long as it exists: ``rate()`` then falls to 0 within one rate window.
  Removing the series instead would leave ``rate()`` reading the last samples in its window
  (stale values) and then nothing at all; and a series that comes back restarts at zero, which
  Prometheus reads as a counter reset. Only a deleted Service's series is removed.
- Services that no route sends to get no traffic, even the stable Service of a Rollout without
  a traffic provider: the simulator plays users reaching the application through a gateway.
  The exception is a blue-green preview Service (label ``sluice.dev/preview: "true"``): it gets
  test traffic, ``rps * PREVIEW_SHARE`` on top of any route's, as a team's smoke tests would send
  it, so that pre-promotion analysis has requests to measure. Test traffic is no user's: the
  gateway's counters never count it.
- A Service's endpoints (:func:`selected_ready_pods`) are its ready pods that are not
  terminating; when it has none, its terminating pods that are still ready serve instead (as
  kube-proxy and gateways use EndpointSlices' ``serving`` terminating endpoints, KEP-1669,
  GA in Kubernetes 1.28). So a deleted Deployment's pods serve until their containers stop (the
  workload simulator's ``stop_delay``), and a release that moves traffic away in that time
  fails no request. Throughout, a Service's "ready pods" are these endpoints.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from operators.rollout.ownership import PREVIEW_LABEL, STABLE, TRACK_LABEL
from operators.traffic.gateway_api import DEFAULT_BACKEND_GROUP, DEFAULT_BACKEND_KIND, DEFAULT_BACKEND_WEIGHT
from operators.traffic.istio import service_of
from sluice_sandbox.behaviour import Behaviour, pod_behaviour
from sluice_sandbox.exporter import (
    ERROR_CODE,
    GATEWAY_CODES,
    OK_CODE,
    UNAVAILABLE_CODE,
    MetricsExporter,
    TrafficSetting,
)
from sluice_sandbox.store import DELETED, Change, StorageKey, Store
from sluice_sandbox.tasks import cancel_and_wait
from sluice_sandbox.workloads import is_ready, is_terminating

logger = logging.getLogger(__name__)

HTTPROUTES = "gateway.networking.k8s.io/v1/httproutes"
SERVICES = "v1/services"
# What the simulator follows, by storage key: HTTPRoutes may be followed before their CRD exists.
_ROUTES_KEY: StorageKey = ("gateway.networking.k8s.io", "httproutes")
_VIRTUAL_SERVICES_KEY: StorageKey = ("networking.istio.io", "virtualservices")
_SERVICES_KEY: StorageKey = ("", "services")
_PODS_KEY: StorageKey = ("", "pods")
DEFAULT_RPS = 20.0
# Test traffic to a blue-green preview Service, as a share of a route's requests per second.
PREVIEW_SHARE = 0.25
DEFAULT_INTERVAL = 0.5
DEFAULT_HISTORY = 100_000

ServiceKey = tuple[str, str]  # (namespace, name)
RouteKey = tuple[str, str]  # (namespace, name) of an HTTPRoute
K = TypeVar("K")
V = TypeVar("V")
MIRROR_FILTER = "RequestMirror"


@dataclass(frozen=True)
class MarkedRequests:
    """The share of the simulated requests that carry a header, so that header routes get requests."""

    header: str = "x-canary"
    value: str = "always"
    share: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise ValueError(
                f"the share of requests with header {self.header} must be in [0, 1], not {self.share}"
            )


DEFAULT_MARKED = MarkedRequests()


class Share(NamedTuple):
    """What one backend of a route gets: `rps` requests per second; mirrored copies have no weight."""

    service: ServiceKey
    weight: int
    rps: float
    mirrored: bool = False


# ----- The pure part: who gets which requests -----


@dataclass(frozen=True)
class ServiceTraffic:
    """What one Service behind a route gets now."""

    weight: int  # the weights of the backendRefs naming it, summed over rules and routes
    rps: float  # requests per second sent to it
    ready_pods: int  # its endpoints: ready pods, or failing those its terminating ones still ready
    streams: tuple[TrafficSetting, ...]  # what its ready pods serve: one per behaviour (none: nothing)
    track: str | None = None  # the Service's sluice.dev/track label
    problems: tuple[str, ...] = ()  # bad behaviour settings of its pods, which were ignored


def _key(obj: Mapping[str, Any]) -> ServiceKey:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def _weight(backend: Mapping[str, Any]) -> int:
    value = backend.get("weight", DEFAULT_BACKEND_WEIGHT)
    # The sandbox serves HTTPRoutes with a permissive schema: what the real one refuses is no weight.
    valid = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if valid else 0


def _is_service(backend: Mapping[str, Any]) -> bool:
    kind = (backend.get("group", DEFAULT_BACKEND_GROUP), backend.get("kind", DEFAULT_BACKEND_KIND))
    return kind == (DEFAULT_BACKEND_GROUP, DEFAULT_BACKEND_KIND)


def refused(route: Mapping[str, Any]) -> bool:
    """Whether Gateway controllers reported on the route and none accepted it: no gateway serves it.

    A route that no controller reported on is served (a sandbox without the Gateway controller).
    """
    parents = (route.get("status") or {}).get("parents") or []
    accepted = (
        condition.get("type") == "Accepted" and condition.get("status") == "True"
        for parent in parents
        for condition in parent.get("conditions") or []
    )
    return bool(parents) and not any(accepted)


def _header_matches(match: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(match.get("headers") or [])


def _matched_headers(rule: Mapping[str, Any], marked: MarkedRequests) -> int | None:
    """How many header matches of the rule a marked request (GET /, its one header) meets at best;
    None when no match of the rule takes it."""
    best: int | None = None
    for match in rule.get("matches") or []:
        headers = _header_matches(match)
        path = match.get("path") or {}
        takes = (
            all(
                h.get("type", "Exact") == "Exact"
                and str(h.get("name", "")).lower() == marked.header.lower()
                and h.get("value") == marked.value
                for h in headers
            )
            and not match.get("queryParams")
            and match.get("method") in (None, "GET")
            and path.get("type", "PathPrefix") in ("PathPrefix", "Exact")
            and path.get("value", "/") == "/"
        )
        if takes and (best is None or len(headers) > best):
            best = len(headers)
    return best


def _has_header_match(rule: Mapping[str, Any]) -> bool:
    return any(_header_matches(match) for match in rule.get("matches") or [])


def _rule_rates(rules: Sequence[Mapping[str, Any]], rps: float, marked: MarkedRequests) -> list[float]:
    """The requests per second each rule gets: header rules the marked requests they win, the others
    an even split of the rest."""
    rates = [0.0] * len(rules)
    plain = [index for index, rule in enumerate(rules) if not _has_header_match(rule)]
    scored = [
        (score, -index)
        for index, rule in enumerate(rules)
        if _has_header_match(rule) and (score := _matched_headers(rule, marked)) is not None
    ]
    rest = rps
    if scored:
        _, negative_index = max(scored)  # the most header matches; between equals, the first rule
        rates[-negative_index] = rps * marked.share
        rest -= rates[-negative_index]
    for index in plain:
        rates[index] = rest / len(plain)
    return rates


def _mirrored_fraction(mirror: Mapping[str, Any]) -> float:
    """The share of a rule's requests a RequestMirror filter copies: percent, fraction, or all."""
    percent = mirror.get("percent")
    if isinstance(percent, int):
        return max(0.0, min(1.0, percent / 100))
    fraction = mirror.get("fraction")
    if isinstance(fraction, Mapping):
        numerator, denominator = fraction.get("numerator"), fraction.get("denominator", 100)
        if isinstance(numerator, int) and isinstance(denominator, int) and denominator > 0:
            return max(0.0, min(1.0, numerator / denominator))
    return 1.0


def _service_shares(
    route: Mapping[str, Any], rps: float, marked: MarkedRequests = DEFAULT_MARKED
) -> Iterator[Share]:
    """What each Service backendRef of the route's rules gets, and each Service a rule mirrors to;
    nothing for a route no Gateway accepted."""
    if refused(route):
        return
    namespace = route.get("metadata", {}).get("namespace", "")
    rules = (route.get("spec") or {}).get("rules") or []
    for rule, rule_rps in zip(rules, _rule_rates(rules, rps, marked), strict=True):
        backends = rule.get("backendRefs") or []
        total = sum(_weight(backend) for backend in backends)
        for backend in backends:
            if not _is_service(backend):
                continue
            key = (backend.get("namespace", namespace), backend.get("name", ""))
            weight = _weight(backend)
            yield Share(key, weight, rule_rps * weight / total if total else 0.0)
        for item in rule.get("filters") or []:
            mirror = item.get("requestMirror") or {}
            target = mirror.get("backendRef") or {}
            if item.get("type") != MIRROR_FILTER or not _is_service(target):
                continue
            key = (target.get("namespace", namespace), target.get("name", ""))
            yield Share(key, 0, rule_rps * _mirrored_fraction(mirror), mirrored=True)


def virtual_service_as_route(virtual_service: Mapping[str, Any]) -> dict[str, Any]:
    """An Istio VirtualService as the HTTPRoute that routes the same: one rule per HTTP route.

    Requests reach a VirtualService through its `hosts`: one without a host naming a Service of
    its namespace gets none (no rules). Its HTTP routes become rules in order, up to the first
    without a `match`, which takes every request left (Istio never reaches the ones after it). A
    route's destinations become backendRefs with Istio's weights (a lone destination without one
    gets everything); a destination host that names no Service of the namespace takes its share
    unsimulated, like a backend of another kind. Its `match` becomes HTTPRouteMatches (header,
    query parameter, uri and method conditions), its `mirror`/`mirrorPercentage` and `mirrors`
    RequestMirror filters.

    The simulator then applies Gateway API precedence (the rule with the most matching headers
    wins), not Istio's first match in order. For the VirtualServices Sluice writes (its header
    and mirror routes, with header matches, before the split route, which has none) both send
    the marked requests to the header route and all others to the split: the same answer.
    """
    meta = virtual_service.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    spec = virtual_service.get("spec") or {}
    hosts = [host for host in spec.get("hosts") or [] if service_of(host, namespace) is not None]
    rules: list[dict[str, Any]] = []
    http = (spec.get("http") or []) if hosts else []
    for route in http:
        if not isinstance(route, Mapping):
            continue
        destinations = route.get("route") or []
        backends: list[dict[str, Any]] = []
        for destination in destinations:
            weight = destination.get("weight", 100 if len(destinations) == 1 else 0)
            service = service_of((destination.get("destination") or {}).get("host"), namespace)
            backend = {"name": service} if service is not None else _UNSIMULATED_HOST
            backends.append({**backend, "weight": weight})
        rule: dict[str, Any] = {"backendRefs": backends}
        if route.get("match"):
            rule["matches"] = [
                _as_route_match(match) for match in route["match"] if isinstance(match, Mapping)
            ]
        filters = _as_mirror_filters(route, namespace)
        if filters:
            rule["filters"] = filters
        rules.append(rule)
        if not route.get("match"):
            break  # takes every request left: Istio never reaches the routes after it
    return {"metadata": {"name": meta.get("name"), "namespace": namespace}, "spec": {"rules": rules}}


_ISTIO_STRING_MATCH = {"exact": "Exact", "regex": "RegularExpression"}
_ISTIO_URI_MATCH = {"exact": "Exact", "prefix": "PathPrefix", "regex": "RegularExpression"}


def _as_route_match(match: Mapping[str, Any]) -> dict[str, Any]:
    """An Istio HTTPMatchRequest as a Gateway API HTTPRouteMatch, as far as the simulator reads one.

    A header or query parameter `prefix` (no Gateway API shape) becomes a regular expression, which
    the simulator's marked requests never match, as they would not match most prefixes either."""
    result: dict[str, Any] = {}
    for field, key in (("headers", "headers"), ("queryParams", "queryParams")):
        conditions = match.get(field)
        if isinstance(conditions, Mapping) and conditions:
            result[key] = [_as_string_match(name, condition) for name, condition in conditions.items()]
    uri = match.get("uri")
    if isinstance(uri, Mapping):
        for istio_kind, kind in _ISTIO_URI_MATCH.items():
            if isinstance(uri.get(istio_kind), str):
                result["path"] = {"type": kind, "value": uri[istio_kind]}
    method = match.get("method")
    if isinstance(method, Mapping) and isinstance(method.get("exact"), str):
        result["method"] = method["exact"]
    return result


def _as_string_match(name: str, condition: Any) -> dict[str, Any]:
    condition = condition if isinstance(condition, Mapping) else {}
    for istio_kind, kind in _ISTIO_STRING_MATCH.items():
        if isinstance(condition.get(istio_kind), str):
            return {"type": kind, "name": name, "value": condition[istio_kind]}
    return {"type": "RegularExpression", "name": name, "value": str(condition.get("prefix", ""))}


def _as_mirror_filters(route: Mapping[str, Any], namespace: str) -> list[dict[str, Any]]:
    """A route's `mirror` (with `mirrorPercentage`; absent: every request) and `mirrors` as
    RequestMirror filters; a mirror to no Service of the namespace is not simulated."""
    mirrors: list[tuple[Any, Any]] = []
    if isinstance(route.get("mirror"), Mapping):
        mirrors.append((route["mirror"], route.get("mirrorPercentage")))
    for item in route.get("mirrors") or []:
        if isinstance(item, Mapping):
            mirrors.append((item.get("destination") or {}, item.get("percentage")))
    filters: list[dict[str, Any]] = []
    for destination, percentage in mirrors:
        service = service_of(destination.get("host"), namespace)
        if service is None:
            continue
        mirror: dict[str, Any] = {"backendRef": {"name": service}}
        value = percentage.get("value") if isinstance(percentage, Mapping) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            # Istio's percentage is a double: a fraction out of 10000 keeps two decimals of it.
            mirror["fraction"] = {"numerator": round(value * 100), "denominator": 10000}
        filters.append({"type": MIRROR_FILTER, "requestMirror": mirror})
    return filters


# A VirtualService destination outside the namespace's Services: a backend the simulator skips.
_UNSIMULATED_HOST = {"group": "networking.istio.io", "kind": "Host", "name": ""}


def preview_rps(service: Mapping[str, Any] | None, rps: float) -> float:
    """The test traffic a Service gets besides its routes': some for a blue-green preview, else none."""
    labels = (service or {}).get("metadata", {}).get("labels") or {}
    return rps * PREVIEW_SHARE if labels.get(PREVIEW_LABEL) == "true" else 0.0


def route_split(
    routes: Iterable[Mapping[str, Any]], rps: float, marked: MarkedRequests = DEFAULT_MARKED
) -> dict[ServiceKey, tuple[int, float]]:
    """(weight, requests per second, mirrored copies included) of every Service the routes send to."""
    split: dict[ServiceKey, tuple[int, float]] = {}
    for route in routes:
        for key, weight, share, _ in _service_shares(route, rps, marked):
            old_weight, old_rps = split.get(key, (0, 0.0))
            split[key] = (old_weight + weight, old_rps + share)
    return split


def selected_ready_pods(
    service: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """
    The Service's endpoints that get its requests: the ready pods of its namespace that carry
    its selector's labels and are not terminating; if there are none, the terminating ones that
    are still ready (EndpointSlice ``serving``), as kube-proxy and gateways do (KEP-1669).
    """
    namespace = service.get("metadata", {}).get("namespace")
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector:
        return []  # a Service without a selector has no endpoints managed for it
    serving = [
        pod
        for pod in pods
        if pod.get("metadata", {}).get("namespace") == namespace
        and is_ready(pod)
        and selector.items() <= (pod.get("metadata", {}).get("labels") or {}).items()
    ]
    return [pod for pod in serving if not is_terminating(pod)] or serving


def served_streams(
    rps: float, pods: Sequence[Mapping[str, Any]]
) -> tuple[tuple[TrafficSetting, ...], tuple[str, ...]]:
    """`rps` served by `pods` (each behaviour's share by its pod count), and the problems read."""
    behaviours: Counter[Behaviour] = Counter()
    problems: dict[str, None] = {}  # ordered and without duplicates: pods of one version repeat them
    for pod in pods:
        behaviour, found = pod_behaviour(pod)
        behaviours[behaviour] += 1
        problems.update(dict.fromkeys(found))
    if rps <= 0 or not pods:
        return (), tuple(problems)
    streams = tuple(
        TrafficSetting(rps * count / len(pods), behaviour.error_rate, behaviour.latency_seconds)
        for behaviour, count in sorted(behaviours.items())
    )
    return streams, tuple(problems)


def service_traffic(
    routes: Iterable[Mapping[str, Any]],
    services: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    *,
    rps: float = DEFAULT_RPS,
    marked: MarkedRequests = DEFAULT_MARKED,
) -> dict[ServiceKey, ServiceTraffic]:
    """The traffic of every Service the routes send to, each route sending `rps` requests per second."""
    by_key = {_key(service): service for service in services}
    pods = list(pods)
    result: dict[ServiceKey, ServiceTraffic] = {}
    split = route_split(routes, rps, marked)
    for key, preview in by_key.items():
        if (extra := preview_rps(preview, rps)) > 0:
            weight, share = split.get(key, (0, 0.0))
            split[key] = (weight, share + extra)
    for key, (weight, share) in split.items():
        service = by_key.get(key)
        ready = selected_ready_pods(service, pods) if service is not None else []
        streams, problems = served_streams(share, ready)
        labels = (service or {}).get("metadata", {}).get("labels") or {}
        result[key] = ServiceTraffic(weight, share, len(ready), streams, labels.get(TRACK_LABEL), problems)
    return result


def add_gateway_rates(rates: dict[str, float], share: float, ready: Sequence[Mapping[str, Any]]) -> None:
    """Add what the gateway answers for `share` requests/s sent to a Service with these ready pods:
    503 when none serves, else the pods' 200s and 500s."""
    streams, _ = served_streams(share, ready)
    if not streams:
        rates[UNAVAILABLE_CODE] += share
    for stream in streams:
        errors = stream.rps * stream.error_rate
        rates[OK_CODE] += stream.rps - errors
        rates[ERROR_CODE] += errors


def gateway_traffic(
    routes: Iterable[Mapping[str, Any]],
    services: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    *,
    rps: float = DEFAULT_RPS,
    marked: MarkedRequests = DEFAULT_MARKED,
) -> dict[RouteKey, dict[str, float]]:
    """What the gateway answers on each route, in requests per second by status code.

    Every route has the codes of :data:`GATEWAY_CODES` (at 0 when none is answered). A request
    to a Service with no ready pod (or no such Service) is a 503; one a Service serves is a 200
    or a 500 as its pods' behaviour says.
    """
    by_key = {_key(service): service for service in services}
    pods = list(pods)
    ready: dict[ServiceKey, list[Mapping[str, Any]]] = {}
    result: dict[RouteKey, dict[str, float]] = {}
    for route in routes:
        rates = dict.fromkeys(GATEWAY_CODES, 0.0)
        for key, _, share, mirrored in _service_shares(route, rps, marked):
            if share <= 0 or mirrored:
                continue  # a mirrored copy's answer is discarded: no user sees it
            if key not in ready:
                service = by_key.get(key)
                ready[key] = selected_ready_pods(service, pods) if service is not None else []
            add_gateway_rates(rates, share, ready[key])
        result[_key(route)] = rates
    return result


# ----- The same, kept up to date change by change -----


def _selector(service: Mapping[str, Any]) -> Mapping[str, Any]:
    return (service.get("spec") or {}).get("selector") or {}


def _labels(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    return pod.get("metadata", {}).get("labels") or {}


def _namespace(obj: Mapping[str, Any]) -> Any:
    return obj.get("metadata", {}).get("namespace")


class TrafficIndex:
    """
    :func:`service_traffic` and :func:`gateway_traffic` of everything put in, recomputed only
    where a change can move them, so that a tick costs what changed since the last one rather
    than every Service checked against every pod.

    Routes, Services and pods are put in (or taken out, with None) one by one; :meth:`refresh`
    then updates :attr:`traffic` and :attr:`gateway`, equal to what the pure functions give for
    everything put in (the unit tests check it on random histories). The objects are kept, not
    copied: they must not change once put in (the store's never do).

    What a change reaches, through the indexes:

    - a pod: the Services of its namespace whose selector it carries (now or before), found by
      one label of each selector (:attr:`_by_label`), and the routes sending to them;
    - a Service: itself (its members recomputed from its namespace's pods only when its selector
      or namespace changes) and the routes sending to it;
    - a route: the Services it sends to (their weight and share) and its own gateway rates.
    """

    def __init__(self, rps: float = DEFAULT_RPS, marked: MarkedRequests = DEFAULT_MARKED) -> None:
        self.rps = rps
        self.marked = marked
        self.routes: dict[RouteKey, Mapping[str, Any]] = {}
        self.services: dict[ServiceKey, Mapping[str, Any]] = {}
        self.traffic: dict[ServiceKey, ServiceTraffic] = {}
        self.gateway: dict[RouteKey, dict[str, float]] = {}
        self._pods: dict[Any, dict[str, Mapping[str, Any]]] = {}  # namespace -> name -> pod
        self._shares: dict[RouteKey, list[Share]] = {}  # each route's backends
        self._routes_to: dict[ServiceKey, set[RouteKey]] = {}
        # Each Service with a selector under one (namespace, label, value) of it; those whose
        # selector has no string value to index by are checked against every pod of their namespace.
        self._by_label: dict[tuple[Any, str, str], set[ServiceKey]] = {}
        self._unindexed: dict[Any, set[ServiceKey]] = {}
        self._members: dict[ServiceKey, dict[str, Mapping[str, Any]]] = {}  # the pods it selects, by name
        self._endpoints: dict[ServiceKey, list[Mapping[str, Any]]] = {}  # selected_ready_pods, cached
        self._stale_services: set[ServiceKey] = set()  # whose ServiceTraffic may have moved
        self._stale_routes: set[RouteKey] = set()  # whose gateway rates may have moved

    def put_route(self, key: RouteKey, route: Mapping[str, Any] | None) -> None:
        for service, *_ in self._shares.pop(key, []):
            self._stale_services.add(service)
            routes = self._routes_to.get(service)
            if routes is not None:
                routes.discard(key)
                if not routes:
                    del self._routes_to[service]
        self._stale_routes.add(key)
        if route is None:
            self.routes.pop(key, None)
            return
        self.routes[key] = route
        self._shares[key] = shares = list(_service_shares(route, self.rps, self.marked))
        for service, *_ in shares:
            self._stale_services.add(service)
            self._routes_to.setdefault(service, set()).add(key)

    def put_service(self, key: ServiceKey, service: Mapping[str, Any] | None) -> None:
        old = self.services.get(key)
        same_members = (
            old is not None
            and service is not None
            and _namespace(old) == _namespace(service)
            and _selector(old) == _selector(service)
        )
        if not same_members:
            if old is not None:
                self._unindex_service(key, old)
            if service is not None:
                self._index_service(key, service)
        if service is None:
            self.services.pop(key, None)
        else:
            self.services[key] = service
        self._touch(key)  # its labels (the track) may have changed, if not its members

    def put_pod(self, namespace: Any, name: str, pod: Mapping[str, Any] | None) -> None:
        in_namespace = self._pods.setdefault(namespace, {})
        old = in_namespace.get(name)
        before = self._selecting(namespace, old) if old is not None else set()
        if pod is None:
            in_namespace.pop(name, None)
            if not in_namespace:
                del self._pods[namespace]
        else:
            in_namespace[name] = pod
        after = self._selecting(namespace, pod) if pod is not None else set()
        for key in before - after:
            self._members.get(key, {}).pop(name, None)
        if pod is not None:
            for key in after:
                self._members.setdefault(key, {})[name] = pod
        for key in before | after:
            self._touch(key)

    def refresh(self) -> tuple[set[ServiceKey], set[RouteKey]]:
        """
        Bring :attr:`traffic` and :attr:`gateway` up to date with what was put in; return the
        Services and routes looked at: any other's traffic or rates are as they were.
        """
        services, routes = self._stale_services, self._stale_routes
        for key in services:
            split = self._split(key)
            if split is None:
                self.traffic.pop(key, None)
                continue
            weight, share = split
            ready = self._ready(key)
            streams, problems = served_streams(share, ready)
            labels = (self.services.get(key) or {}).get("metadata", {}).get("labels") or {}
            self.traffic[key] = ServiceTraffic(
                weight, share, len(ready), streams, labels.get(TRACK_LABEL), problems
            )
        for key in routes:
            if key in self.routes:
                self.gateway[key] = self._gateway_rates(key)
            else:
                self.gateway.pop(key, None)
        self._stale_services, self._stale_routes = set(), set()
        return services, routes

    def _touch(self, key: ServiceKey) -> None:
        """The Service's endpoints may have changed: so may its traffic and its routes' rates."""
        self._endpoints.pop(key, None)
        self._stale_services.add(key)
        self._stale_routes.update(self._routes_to.get(key, ()))

    def _index_service(self, key: ServiceKey, service: Mapping[str, Any]) -> None:
        selector, namespace = _selector(service), _namespace(service)
        if not selector:
            return  # it selects nothing (see selected_ready_pods)
        pairs = [(label, value) for label, value in selector.items() if isinstance(value, str)]
        if pairs:
            label, value = min(pairs)
            self._by_label.setdefault((namespace, label, value), set()).add(key)
        else:
            self._unindexed.setdefault(namespace, set()).add(key)
        self._members[key] = {
            name: pod
            for name, pod in self._pods.get(namespace, {}).items()
            if selector.items() <= _labels(pod).items()
        }

    def _unindex_service(self, key: ServiceKey, service: Mapping[str, Any]) -> None:
        self._members.pop(key, None)
        namespace = _namespace(service)
        _discard(self._unindexed, namespace, key)
        for label, value in _selector(service).items():
            if isinstance(value, str):
                _discard(self._by_label, (namespace, label, value), key)

    def _selecting(self, namespace: Any, pod: Mapping[str, Any]) -> set[ServiceKey]:
        """The Services of the namespace whose selector the pod carries."""
        labels = _labels(pod)
        candidates = set(self._unindexed.get(namespace, ()))
        for label, value in labels.items():
            if isinstance(value, str):
                candidates.update(self._by_label.get((namespace, label, value), ()))
        return {
            key
            for key in candidates
            if (service := self.services.get(key)) is not None
            and _selector(service).items() <= labels.items()
        }

    def _split(self, key: ServiceKey) -> tuple[int, float] | None:
        """As route_split() sums it: routes in the API's order, then rules and backends in theirs."""
        test = preview_rps(self.services.get(key), self.rps)
        routes = self._routes_to.get(key)
        if not routes:
            return (0, test) if test > 0 else None
        weight, share = 0, test
        for route in sorted(routes):
            for service, backend_weight, backend_share, _ in self._shares[route]:
                if service == key:
                    weight, share = weight + backend_weight, share + backend_share
        return weight, share

    def _ready(self, key: ServiceKey) -> list[Mapping[str, Any]]:
        ready = self._endpoints.get(key)
        if ready is None:
            service = self.services.get(key)
            members = self._members.get(key, {})
            # In the API's order (by name), as the pure functions get the store's list.
            candidates = [members[name] for name in sorted(members)]
            ready = selected_ready_pods(service, candidates) if service is not None else []
            self._endpoints[key] = ready
        return ready

    def _gateway_rates(self, key: RouteKey) -> dict[str, float]:
        """As gateway_traffic() computes one route's rates."""
        rates = dict.fromkeys(GATEWAY_CODES, 0.0)
        for service, _, share, mirrored in self._shares[key]:
            if share <= 0 or mirrored:
                continue
            add_gateway_rates(rates, share, self._ready(service))
        return rates


def _discard(index: dict[K, set[V]], index_key: K, value: V) -> None:
    values = index.get(index_key)
    if values is not None:
        values.discard(value)
        if not values:
            del index[index_key]


# ----- The serving history: did a Service ever stop serving while it had weight? -----


@dataclass(frozen=True)
class ServingRecord:
    """One tick's view of one Service behind a route."""

    at: float  # seconds since the simulator started
    namespace: str
    service: str
    track: str | None
    weight: int
    ready_pods: int


@dataclass(frozen=True)
class Outage:
    """Consecutive ticks when a Service that had served before had weight but no ready pod."""

    namespace: str
    service: str
    start: float
    end: float  # the last tick of the outage

    def __str__(self) -> str:
        return (
            f"{self.namespace}/{self.service} had weight but no ready pod "
            f"from {self.start:.1f}s to {self.end:.1f}s"
        )


def outages(
    history: Iterable[ServingRecord],
    *,
    namespace: str | None = None,
    service: str | None = None,
    track: str | None = None,
) -> list[Outage]:
    """
    When the selected Services (all by default) stopped serving while they had weight, in time
    order. A Service only stops serving once it has served: the ticks before its first ready pod
    (a new install starting up) are no outage.
    """
    served: set[ServiceKey] = set()
    ongoing: dict[ServiceKey, Outage] = {}
    found: list[Outage] = []
    for record in history:
        wanted = ((namespace, record.namespace), (service, record.service), (track, record.track))
        if any(value is not None and value != actual for value, actual in wanted):
            continue
        key = (record.namespace, record.service)
        if record.ready_pods:
            served.add(key)
        if record.weight > 0 and not record.ready_pods and key in served:
            start = ongoing[key].start if key in ongoing else record.at
            ongoing[key] = Outage(record.namespace, record.service, start, record.at)
        elif key in ongoing:
            found.append(ongoing.pop(key))
    return sorted([*found, *ongoing.values()], key=lambda outage: outage.start)


def never_stopped_serving(history: Iterable[ServingRecord], namespace: str, service: str) -> bool:
    return not outages(history, namespace=namespace, service=service)


# ----- The loop -----


class TrafficSimulator:
    """
    Sets the exporter's traffic from the store's routes, Services and pods every `interval` seconds.

    It follows them with :meth:`Store.subscribe` into a :class:`TrafficIndex` (current whenever
    a tick reads it, and holding the store's objects uncopied): a tick recomputes only what the
    changes since the last one can have moved.
    """

    def __init__(
        self,
        store: Store,
        exporter: MetricsExporter,
        rps: float = DEFAULT_RPS,
        *,
        marked: MarkedRequests = DEFAULT_MARKED,
        interval: float = DEFAULT_INTERVAL,
        history_limit: int = DEFAULT_HISTORY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._exporter = exporter
        self._rps = rps
        self._marked = marked
        self._interval = interval
        self._clock = clock
        self._started = clock()
        self._task: asyncio.Task[None] | None = None
        self._index = TrafficIndex(rps, marked)
        self._unsubscribe: list[Callable[[], None]] = []
        self._resynced = False  # a fresh index: the next tick looks at every series exported before
        # What each tick records of the routed Services (ServingRecord less the time), in order.
        self._rows: list[tuple[str, str, str | None, int, int]] | None = None
        self._exported: dict[ServiceKey, tuple[TrafficSetting, ...]] = {}
        self._gateway: dict[RouteKey, dict[str, float]] = {}
        self._reported: set[tuple[ServiceKey, str]] = set()
        # Appended on the sandbox's loop, read from other threads (e.g. a demo's report).
        self._history: deque[ServingRecord] = deque(maxlen=history_limit)
        self._history_lock = threading.Lock()

    @property
    def history(self) -> list[ServingRecord]:
        with self._history_lock:
            return list(self._history)

    def stable_outages(self) -> list[str]:
        """Each time a stable Service (``sluice.dev/track: stable``) stopped serving with weight."""
        return [str(outage) for outage in outages(self.history, track=STABLE)]

    async def start(self) -> None:
        self._started = self._clock()
        self._follow()
        self._task = asyncio.create_task(self.run(), name="sandbox-traffic-simulator")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    def _follow(self) -> None:
        """Follow the store (once; again after a stop, from a fresh index)."""
        if self._unsubscribe:
            return
        self._index = index = TrafficIndex(self._rps, self._marked)
        self._resynced = True

        def on_route(change: Change) -> None:
            index.put_route(_key(change.obj), None if change.type == DELETED else change.obj)

        def on_virtual_service(change: Change) -> None:
            # Routed as the HTTPRoute it amounts to, under its own name (module docs).
            route = None if change.type == DELETED else virtual_service_as_route(change.obj)
            index.put_route(_key(change.obj), route)

        def on_service(change: Change) -> None:
            index.put_service(_key(change.obj), None if change.type == DELETED else change.obj)

        def on_pod(change: Change) -> None:
            meta = change.obj["metadata"]
            index.put_pod(meta.get("namespace"), meta["name"], None if change.type == DELETED else change.obj)

        self._unsubscribe = [
            self._store.subscribe(_ROUTES_KEY, on_route),
            self._store.subscribe(_VIRTUAL_SERVICES_KEY, on_virtual_service),
            self._store.subscribe(_SERVICES_KEY, on_service),
            self._store.subscribe(_PODS_KEY, on_pod),
        ]

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("The traffic simulator failed a tick; trying again at the next.")
            await asyncio.sleep(self._interval)  # the pace of the simulation, not a wait for a condition

    async def tick(self) -> dict[ServiceKey, ServiceTraffic]:
        """Set the traffic that the cluster implies now (as service_traffic() and gateway_traffic())."""
        self._follow()
        services, routes = self._index.refresh()  # what may have changed since the last tick
        if self._resynced:
            services |= set(self._exported)
            routes |= set(self._gateway)
            self._resynced = False
        traffic = dict(self._index.traffic)
        self._export(traffic, self._index.services, services)
        self._export_gateway(self._index.gateway, routes)
        self._record(traffic, services)
        self._report(traffic, services)
        return traffic

    def _export(
        self,
        traffic: Mapping[ServiceKey, ServiceTraffic],
        existing: Mapping[ServiceKey, object],
        changed: Iterable[ServiceKey],
    ) -> None:
        """
        Series for the existing Services routed now or before (see the module docs), and no others;
        looking only at the Services whose traffic or existence may have changed.
        """
        for key in sorted(changed):
            if key not in self._exported and key not in traffic:
                continue  # never routed
            if key in existing:
                self._set(key, traffic[key].streams if key in traffic else ())
            elif self._exported.pop(key, None) is not None:
                self._exporter.remove_service(*key)

    def _set(self, key: ServiceKey, streams: tuple[TrafficSetting, ...]) -> None:
        if self._exported.get(key) != streams:
            self._exporter.set_service_mix(*key, streams)
            self._exported[key] = streams

    def _export_gateway(
        self, gateway: Mapping[RouteKey, dict[str, float]], changed: Iterable[RouteKey]
    ) -> None:
        """Series for the existing routes (see the module docs), and no others; of those that changed."""
        for key in sorted(changed):
            rates = gateway.get(key)
            if rates is None:
                if self._gateway.pop(key, None) is not None:
                    self._exporter.remove_route(*key)
            elif self._gateway.get(key) != rates:
                self._exporter.set_route_rates(*key, rates)
                self._gateway[key] = rates

    def _record(self, traffic: Mapping[ServiceKey, ServiceTraffic], changed: set[ServiceKey]) -> None:
        if changed or self._rows is None:  # else every Service is as it was at the last tick
            self._rows = [
                (namespace, name, service.track, service.weight, service.ready_pods)
                for (namespace, name), service in sorted(traffic.items())
            ]
        at = self._clock() - self._started
        records = [ServingRecord(at, *row) for row in self._rows]
        with self._history_lock:
            self._history.extend(records)

    def _report(self, traffic: Mapping[ServiceKey, ServiceTraffic], changed: Iterable[ServiceKey]) -> None:
        """Warn once about each bad setting, not at every tick (a Service's only change with its traffic)."""
        for key in sorted(changed):
            service = traffic.get(key)
            for problem in service.problems if service is not None else ():
                if (key, problem) not in self._reported:
                    self._reported.add((key, problem))
                    logger.warning(f"Pods of Service {key[0]}/{key[1]}: {problem}; the default is used.")
