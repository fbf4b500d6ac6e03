"""
Kubernetes URLs, parsed as the API server reads them, and requests in kmock's model.

kmock's own parsing crashes on ``/api/v1/namespaces`` and reads ``/api/v1/namespaces/NAME`` as a
namespace prefix; so the sandbox parses Kubernetes URLs itself and hands kmock ready requests.
"""

import dataclasses
import json
from collections.abc import Mapping

import aiohttp.web
import kmock


@dataclasses.dataclass(frozen=True)
class Route:
    """A parsed Kubernetes URL: ``/api[s/GROUP]/VERSION[/namespaces/NS]/PLURAL[/NAME[/SUB]]``."""

    group: str
    version: str | None = None
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    watch: bool = False  # the legacy /watch/ path prefix


# `/api/v1/namespaces/NAME/status` addresses the namespace itself, not a resource named "status".
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


def parse_route(path: str) -> Route | None:
    parts = [part for part in path.split("/") if part]
    if parts[:1] == ["api"]:
        group, rest = "", parts[1:]
    elif parts[:1] == ["apis"] and len(parts) >= 2:
        group, rest = parts[1], parts[2:]
    else:
        return None  # /, /apis, /version, /openapi/v2, …
    if not rest:
        return Route(group)
    version, rest = rest[0], rest[1:]
    watch = rest[:1] == ["watch"]
    rest = rest[1:] if watch else rest
    namespace: str | None = None
    addresses_namespace = len(rest) == 3 and rest[2] in _NAMESPACE_SUBRESOURCES
    if len(rest) >= 3 and rest[0] == "namespaces" and not addresses_namespace:
        namespace, rest = rest[1], rest[2:]
    return Route(
        group=group,
        version=version,
        watch=watch,
        namespace=namespace,
        plural=rest[0] if rest else None,
        name=rest[1] if len(rest) > 1 else None,
        subresource="/".join(rest[2:]) or None,
    )


def is_watch(params: Mapping[str, str], route: Route) -> bool:
    return route.watch or params.get("watch") in ("true", "1")


def _guess_action(method: str, route: Route | None, watch: bool) -> kmock.action | None:
    if route is None or route.plural is None:
        return None
    match method:
        case "GET":
            return kmock.action.WATCH if watch else kmock.action.FETCH if route.name else kmock.action.LIST
        case "POST":
            return kmock.action.CREATE
        case "PUT" | "PATCH":
            return kmock.action.UPDATE
        case "DELETE":
            return kmock.action.DELETE
    return None


def parse_request(raw_request: aiohttp.web.BaseRequest, body: bytes, *, id: int = 0) -> kmock.Request:
    """A kmock request with the Kubernetes-specific fields parsed correctly (see the module docs)."""
    route = parse_route(raw_request.path)
    params = dict(raw_request.query)
    watch = route is not None and is_watch(params, route)
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None  # e.g. YAML: the API handlers parse bodies by their content type anyway
    # The API server ignores trailing slashes (clients send `/apis/`), kmock's path filters do not.
    url = raw_request.url.with_path(raw_request.url.path.rstrip("/") or "/", keep_query=True)
    return kmock.Request(
        id=id,
        raw_request=raw_request,
        url=url,
        method=raw_request.method,
        params=params,
        headers=dict(raw_request.headers),
        cookies=dict(raw_request.cookies),
        body=body,
        text=body.decode("utf-8", errors="replace"),
        data=data,
        action=_guess_action(raw_request.method, route, watch),
        resource=None
        if route is None
        else kmock.resource(group=route.group, version=route.version, plural=route.plural),
        namespace=None if route is None else route.namespace,
        name=None if route is None else route.name,
        subresource=None if route is None else route.subresource,
    )
