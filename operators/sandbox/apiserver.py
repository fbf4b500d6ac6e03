"""
The sandbox API server: an in-process Kubernetes API on loopback, built on kmock.

kmock's ``KubernetesEmulator`` provides the request model, the DSL of reactions (used here for
discovery, ``/version``, unknown endpoints, and fault injection by tests), and the rendering
of errors as ``kind: Status``. The object semantics live in :class:`~operators.sandbox.store.Store`
(kmock only merges dicts); :class:`ResourceApi` translates HTTP into store calls.

Two kmock behaviours are deliberately bypassed:

* URL parsing: kmock crashes on ``/api/v1/namespaces`` and reads ``/api/v1/namespaces/NAME``
  as a namespace prefix; we parse Kubernetes URLs ourselves.
* Matching every request against the DSL: kmock re-filters its whole request log on each
  request (O(n) per request), too slow for an operator making thousands of requests. So resource
  requests go straight to the store unless a test registered reactions of its own; only the
  requests that go through the DSL are recorded in kmock's request log.
"""
import asyncio
import dataclasses
import functools
import json
import logging
import math
import pathlib
import re
import tempfile
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import aiohttp.abc
import aiohttp.web
import attrs
import kmock
import yaml

from operators.sandbox import patching
from operators.sandbox.store import (
    ALL_VERBS,
    SUBRESOURCE_VERBS,
    ApiError,
    JsonObject,
    ResourceSpec,
    ScaleSpec,
    Store,
    Watch,
    version_priority,
)

logger = logging.getLogger(__name__)

T = TypeVar('T')

KUBECONFIG_CONTEXT = 'sluice-sandbox'
DEFAULT_NAMESPACES = ('default', 'kube-system', 'kube-public', 'kube-node-lease')


# ----- What is served: the built-in resources, with the API server's defaulting -----

def _default_namespace(namespace: JsonObject) -> None:
    name = namespace['metadata']['name']
    namespace['metadata'].setdefault('labels', {})['kubernetes.io/metadata.name'] = name
    namespace.setdefault('spec', {}).setdefault('finalizers', ['kubernetes'])
    namespace.setdefault('status', {}).setdefault('phase', 'Active')


def _default_replicas(workload: JsonObject) -> None:
    workload.setdefault('spec', {}).setdefault('replicas', 1)


def _default_deployment(deployment: JsonObject) -> None:
    # Only the top-level defaults of apps/v1 Deployments: the pod template is left untouched,
    # so that operators comparing templates see exactly what they wrote.
    _default_replicas(deployment)
    spec = deployment['spec']
    spec.setdefault('revisionHistoryLimit', 10)
    spec.setdefault('progressDeadlineSeconds', 600)
    strategy = spec.setdefault('strategy', {})
    strategy.setdefault('type', 'RollingUpdate')
    if strategy['type'] == 'RollingUpdate':
        strategy.setdefault('rollingUpdate', {}).update({
            key: strategy.get('rollingUpdate', {}).get(key, '25%') for key in ('maxSurge', 'maxUnavailable')
        })


_NAMESPACE_VERBS = tuple(verb for verb in ALL_VERBS if verb != 'deletecollection')
_WORKLOAD_SCALE = ScaleSpec(label_selector_path='.spec.selector')

BUILTIN_RESOURCES: tuple[ResourceSpec, ...] = (
    ResourceSpec('', 'v1', 'namespaces', 'Namespace', namespaced=False, short_names=('ns',),
                 verbs=_NAMESPACE_VERBS, status=True, prepare=_default_namespace),
    ResourceSpec('', 'v1', 'pods', 'Pod', short_names=('po',), categories=('all',), status=True),
    ResourceSpec('', 'v1', 'services', 'Service', short_names=('svc',), categories=('all',), status=True),
    ResourceSpec('', 'v1', 'endpoints', 'Endpoints', short_names=('ep',)),
    ResourceSpec('', 'v1', 'configmaps', 'ConfigMap', short_names=('cm',)),
    ResourceSpec('', 'v1', 'secrets', 'Secret'),
    ResourceSpec('', 'v1', 'events', 'Event', short_names=('ev',)),
    ResourceSpec('', 'v1', 'serviceaccounts', 'ServiceAccount', short_names=('sa',)),
    ResourceSpec('apps', 'v1', 'deployments', 'Deployment', short_names=('deploy',), categories=('all',),
                 status=True, scale=_WORKLOAD_SCALE, prepare=_default_deployment),
    ResourceSpec('apps', 'v1', 'replicasets', 'ReplicaSet', short_names=('rs',), categories=('all',),
                 status=True, scale=_WORKLOAD_SCALE, prepare=_default_replicas),
    ResourceSpec('events.k8s.io', 'v1', 'events', 'Event', short_names=('ev',)),
    ResourceSpec('coordination.k8s.io', 'v1', 'leases', 'Lease'),
    ResourceSpec('admissionregistration.k8s.io', 'v1', 'mutatingwebhookconfigurations',
                 'MutatingWebhookConfiguration', namespaced=False, categories=('api-extensions',)),
    # apiextensions.k8s.io/v1 customresourcedefinitions: always served by the Store itself.
)


# ----- Kubernetes URLs -----

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
_NAMESPACE_SUBRESOURCES = frozenset({'status', 'finalize'})


def parse_route(path: str) -> Route | None:
    parts = [part for part in path.split('/') if part]
    if parts[:1] == ['api']:
        group, rest = '', parts[1:]
    elif parts[:1] == ['apis'] and len(parts) >= 2:
        group, rest = parts[1], parts[2:]
    else:
        return None  # /, /apis, /version, /openapi/v2, …
    if not rest:
        return Route(group)
    version, rest = rest[0], rest[1:]
    watch = rest[:1] == ['watch']
    rest = rest[1:] if watch else rest
    namespace: str | None = None
    addresses_namespace = len(rest) == 3 and rest[2] in _NAMESPACE_SUBRESOURCES
    if len(rest) >= 3 and rest[0] == 'namespaces' and not addresses_namespace:
        namespace, rest = rest[1], rest[2:]
    return Route(
        group=group, version=version, watch=watch, namespace=namespace,
        plural=rest[0] if rest else None,
        name=rest[1] if len(rest) > 1 else None,
        subresource='/'.join(rest[2:]) or None,
    )


def _is_watch(params: Mapping[str, str], route: Route) -> bool:
    return route.watch or params.get('watch') in ('true', '1')


def _guess_action(method: str, route: Route | None, watch: bool) -> kmock.action | None:
    if route is None or route.plural is None:
        return None
    match method:
        case 'GET':
            return kmock.action.WATCH if watch else kmock.action.FETCH if route.name else kmock.action.LIST
        case 'POST':
            return kmock.action.CREATE
        case 'PUT' | 'PATCH':
            return kmock.action.UPDATE
        case 'DELETE':
            return kmock.action.DELETE
    return None


def parse_request(raw_request: aiohttp.web.BaseRequest, body: bytes, *, id: int = 0) -> kmock.Request:
    """A kmock request with the Kubernetes-specific fields parsed correctly (see the module docs)."""
    route = parse_route(raw_request.path)
    params = dict(raw_request.query)
    watch = route is not None and _is_watch(params, route)
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None  # e.g. YAML: the API handlers parse bodies by their content type anyway
    # The API server ignores trailing slashes (clients send `/apis/`), kmock's path filters do not.
    url = raw_request.url.with_path(raw_request.url.path.rstrip('/') or '/', keep_query=True)
    return kmock.Request(
        id=id, raw_request=raw_request, url=url, method=raw_request.method, params=params,
        headers=dict(raw_request.headers), cookies=dict(raw_request.cookies),
        body=body, text=body.decode('utf-8', errors='replace'), data=data,
        action=_guess_action(raw_request.method, route, watch),
        resource=None if route is None else kmock.resource(
            group=route.group, version=route.version, plural=route.plural),
        namespace=None if route is None else route.namespace,
        name=None if route is None else route.name,
        subresource=None if route is None else route.subresource,
    )


# ----- Resource requests: HTTP ⇄ Store -----

class ResourceApi:
    """Serves the resource endpoints (CRUD, patch, watch, subresources) from the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def serve(self, request: kmock.Request,
                    raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        route = parse_route(raw_request.path)
        assert route is not None and route.version is not None and route.plural is not None  # by the caller
        spec = self.store.lookup(route.group, route.version, route.plural)
        if spec is None or (route.namespace is not None and not spec.namespaced):
            raise ApiError.resource_not_found()
        self._check_verb(spec, request.method, route)
        params = request.params
        dry_run = 'dryRun' in params
        sub = route.subresource
        namespace, name = route.namespace, route.name
        if request.method == 'GET' and _is_watch(params, route):
            return await self._stream(raw_request, self._watch(spec, route, params))
        match request.method, name:
            case 'GET', None:
                return _json(await self.store.list(spec, namespace, params.get('labelSelector'),
                                                   params.get('fieldSelector')))
            case 'GET', str():
                return _json(await self.store.get(spec, namespace, name, subresource=sub))
            case 'POST', None:
                created = await self.store.create(spec, _read_body(request), namespace, dry_run=dry_run)
                return _json(created, status=201)
            case 'PUT', str():
                return _json(await self.store.replace(spec, namespace, name, _read_body(request),
                                                      subresource=sub, dry_run=dry_run))
            case 'PATCH', str():
                patch_type = _patch_type(request)
                return _json(await self.store.patch(spec, namespace, name, _read_body(request),
                                                    patch_type=patch_type, subresource=sub, dry_run=dry_run))
            case 'DELETE', str():
                options = _delete_options(request)
                deleted = await self.store.delete(spec, namespace, name, dry_run=dry_run, **options)
                return _json(_deletion_result(spec, deleted))
            case 'DELETE', None:
                options = _delete_options(request)
                return _json(await self.store.delete_collection(
                    spec, namespace, params.get('labelSelector'), params.get('fieldSelector'),
                    propagation=options['propagation'], dry_run=dry_run))
        raise ApiError.method_not_allowed('the server does not allow this method on the requested resource')

    def _check_verb(self, spec: ResourceSpec, method: str, route: Route) -> None:
        if route.subresource is not None:
            if route.name is None or route.subresource not in spec.subresources:
                raise ApiError.resource_not_found()
            if method not in ('GET', 'PUT', 'PATCH'):  # i.e. SUBRESOURCE_VERBS
                raise ApiError.method_not_allowed('the server does not allow this method on the subresource')
            return
        collection = route.name is None
        verb = {('GET', True): 'list', ('GET', False): 'get', ('POST', True): 'create',
                ('PUT', False): 'update', ('PATCH', False): 'patch', ('DELETE', False): 'delete',
                ('DELETE', True): 'deletecollection'}.get((method, collection))
        if verb is not None and verb not in spec.verbs:
            raise ApiError.method_not_allowed(f'the server does not allow {verb} on {spec.qualified_plural}')

    def _watch(self, spec: ResourceSpec, route: Route, params: Mapping[str, str]) -> Watch:
        # A named object's URL watches only that object (the legacy form of a name selector).
        field_selectors = [params.get('fieldSelector'), f'metadata.name={route.name}' if route.name else None]
        return self.store.watch(
            spec, route.namespace, resource_version=params.get('resourceVersion'),
            label_selector=params.get('labelSelector'),
            field_selector=','.join(selector for selector in field_selectors if selector),
            send_initial_events=params.get('sendInitialEvents') == 'true',
            timeout=_float_param(params, 'timeoutSeconds'))

    async def _stream(self, raw_request: aiohttp.web.BaseRequest,
                      watch: Watch) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(headers={'Content-Type': 'application/json'})
        await response.prepare(raw_request)  # send the headers now: clients wait for them
        try:
            try:
                async with watch as events:
                    async for event in events:
                        await response.write(json.dumps(event).encode() + b'\n')
            except ApiError as e:
                # E.g. 410 Gone for a too old resourceVersion: in-stream, as real servers do it,
                # so that clients (kopf, the kubernetes client) re-list and re-watch.
                await response.write(json.dumps({'type': 'ERROR', 'object': e.as_status()}).encode() + b'\n')
            await response.write_eof()
        except ConnectionError:
            pass  # the client has gone; nothing to tell it
        return response


def _json(payload: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.json_response(payload, status=status)


def _float_param(params: Mapping[str, str], name: str) -> float | None:
    if name not in params:
        return None
    try:
        return float(params[name])
    except ValueError:
        raise ApiError.bad_request(f'invalid value for {name}: {params[name]!r}') from None


def _read_body(request: kmock.Request) -> Any:
    if not request.body:
        raise ApiError.bad_request('the request has no body')
    content_type = request.headers.get('Content-Type', '')
    if 'protobuf' in content_type:
        # kubectl's typed clients try protobuf first and fall back to JSON on a 415.
        raise ApiError.unsupported_media_type(f'the sandbox API server does not accept {content_type}')
    try:
        if 'yaml' in content_type:
            return yaml.safe_load(request.body)
        return json.loads(request.body)
    except (ValueError, yaml.YAMLError) as e:
        raise ApiError.bad_request(f'the request body cannot be decoded: {e}') from e


def _patch_type(request: kmock.Request) -> patching.PatchType:
    try:
        return patching.parse_patch_type(request.headers.get('Content-Type'))
    except patching.UnsupportedPatchError as e:
        raise ApiError.unsupported_media_type(str(e)) from e


def _delete_options(request: kmock.Request) -> dict[str, Any]:
    """DeleteOptions from the body (kubernetes client, kubectl) and/or the query (kopf, curl)."""
    body = request.data if isinstance(request.data, Mapping) else {}
    propagation = request.params.get('propagationPolicy') or body.get('propagationPolicy')
    orphan = request.params.get('orphanDependents', body.get('orphanDependents'))
    if propagation is None and orphan in (True, 'true'):
        propagation = 'Orphan'  # the deprecated predecessor of propagationPolicy
    if propagation not in (None, 'Background', 'Foreground', 'Orphan'):
        raise ApiError.bad_request(f'unsupported propagationPolicy: {propagation!r}')
    return {'propagation': propagation, 'preconditions': body.get('preconditions')}


def _deletion_result(spec: ResourceSpec, obj: JsonObject) -> JsonObject:
    meta = obj['metadata']
    if meta.get('finalizers') or not spec.builtin:
        return obj  # pending deletions and custom resources return the object
    return {'kind': 'Status', 'apiVersion': 'v1', 'metadata': {}, 'status': 'Success',
            'details': {'name': meta['name'], 'group': spec.group, 'kind': spec.plural, 'uid': meta['uid']}}


# ----- kmock: routing, discovery, errors -----

@attrs.define(kw_only=True)
class SandboxEmulator(kmock.KubernetesEmulator):
    """
    kmock's Kubernetes emulator with the object semantics delegated to a :class:`Store`.

    Tests may still add kmock reactions (``emulator['patch', kmock.resource(...)] << 500``)
    to inject faults: they take precedence over the store while they are registered.
    """
    store: Store
    _api: ResourceApi = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # Only the scaffold (discovery, /version, 404s): the emulator's own dict-merging object
        # tracking is replaced by the store, so its reactions are deliberately not registered.
        kmock.KubernetesScaffold.__attrs_post_init__(self)
        self._api = ResourceApi(self.store)
        self.fallback['get', re.compile(r'/(healthz|livez|readyz)')] << b'ok'
        # Resource requests that tests' reactions let through fall through to the store. It is
        # signalled by an exception (kmock re-raises exception payloads) because kmock's rendering
        # of callbacks' responses cannot carry statuses such as 201 Created safely.
        (self.fallback ** 1)[_is_resource_request] << _ServeFromStore

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw_request.read()
        try:
            request = parse_request(raw_request, body, id=len(self._requests))
            if _is_resource_request(request) and not self._has_reactions():
                return await self._api.serve(request, raw_request)  # the fast path
            self._requests.append(request)  # kmock's views only see the requests in the log
            try:
                return await self._handle(request)
            except _ServeFromStore:
                return await self._api.serve(request, raw_request)
        except kmock.KubernetesError as e:  # API answers such as 404 or 409: not worth logging
            return await self._render_error(e)
        except Exception as e:
            logger.exception(f'The sandbox API server failed on {raw_request.method} {raw_request.path_qs}')
            return await self._render_error(e)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        # kmock adds a traceback to every error without details, and its 404s give advice on
        # mocking; but these are normal API answers, so they are rendered as the API server does.
        if isinstance(exc, kmock.KubernetesNotFoundError) and not isinstance(exc, ApiError):
            exc = ApiError.resource_not_found()
        if isinstance(exc, ApiError):
            return aiohttp.web.json_response(exc.as_status(), status=exc.status)
        return await super()._render_error(exc)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # Skip KubernetesEmulator._handle(): its object tracking is what the store replaces.
        return await super(kmock.KubernetesEmulator, self)._handle(request)

    def _has_reactions(self) -> bool:
        """Whether a test added reactions of its own (anything but fallbacks), e.g. to inject faults."""
        return any(payload.priorities[:1] != (-math.inf,) for payload in self._payloads)

    def _get_resources(self) -> list[kmock.resource]:
        return [kmock.resource(spec.group, spec.version, spec.plural) for spec in self.store.resources]

    async def _serve_server_version(self, request: kmock.Request) -> kmock.Payload:
        # kmock reports a k3s 1.26, which current kubectl versions warn about as too old.
        return {'major': '1', 'minor': '32', 'gitVersion': 'v1.32.0+sluice-sandbox',
                'gitTreeState': 'clean', 'gitCommit': '', 'buildDate': '', 'goVersion': '',
                'compiler': 'gc', 'platform': 'linux/amd64'}

    async def _serve_api(self, request: kmock.Request) -> kmock.Payload:
        return {'kind': 'APIVersions', 'versions': ['v1'], 'serverAddressByClientCIDRs': [
            {'clientCIDR': '0.0.0.0/0', 'serverAddress': f'{request.url.host}:{request.url.port}'}]}

    async def _serve_apis(self, request: kmock.Request) -> kmock.Payload:
        return {'kind': 'APIGroupList', 'apiVersion': 'v1',
                'groups': [_group_info(group, versions) for group, versions in self._groups().items()]}

    async def _serve_group(self, request: kmock.Request) -> kmock.Payload:
        group = request.resource.group if request.resource is not None else None
        versions = self._groups().get(group or '')
        if not versions:
            raise ApiError.resource_not_found()
        return {'kind': 'APIGroup', 'apiVersion': 'v1', **_group_info(group or '', versions)}

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        group = request.resource.group if request.resource is not None else None
        version = request.resource.version if request.resource is not None else None
        specs = [spec for spec in self.store.resources if spec.group == group and spec.version == version]
        if not specs and (group, version) != ('', 'v1'):
            raise ApiError.resource_not_found()
        return {
            'kind': 'APIResourceList', 'apiVersion': 'v1',
            'groupVersion': f'{group}/{version}' if group else version,
            'resources': [entry for spec in specs for entry in _resource_entries(spec)],
        }

    def _groups(self) -> dict[str, list[str]]:
        """Served API groups (except the core one) with their versions, preferred first."""
        groups: dict[str, set[str]] = {}
        for spec in self.store.resources:
            if spec.group:
                groups.setdefault(spec.group, set()).add(spec.version)
        return {group: sorted(versions, key=version_priority) for group, versions in sorted(groups.items())}


class _ServeFromStore(Exception):
    """Raised by the fallback reaction: this resource request is for the store to serve."""


def _is_resource_request(request: kmock.Request) -> bool:
    return request.resource is not None and request.resource.plural is not None


def _group_info(group: str, versions: list[str]) -> JsonObject:
    entries = [{'groupVersion': f'{group}/{version}', 'version': version} for version in versions]
    return {'name': group, 'versions': entries, 'preferredVersion': entries[0]}


def _resource_entries(spec: ResourceSpec) -> list[JsonObject]:
    main: JsonObject = {'name': spec.plural, 'singularName': spec.singular, 'namespaced': spec.namespaced,
                        'kind': spec.kind, 'verbs': list(spec.verbs)}
    if spec.short_names:
        main['shortNames'] = list(spec.short_names)
    if spec.categories:
        main['categories'] = list(spec.categories)
    entries = [main]
    if spec.status:
        entries.append({'name': f'{spec.plural}/status', 'singularName': '', 'namespaced': spec.namespaced,
                        'kind': spec.kind, 'verbs': list(SUBRESOURCE_VERBS)})
    if spec.scale:
        entries.append({'name': f'{spec.plural}/scale', 'singularName': '', 'namespaced': spec.namespaced,
                        'group': 'autoscaling', 'version': 'v1', 'kind': 'Scale',
                        'verbs': list(SUBRESOURCE_VERBS)})
    return entries


# ----- The server: lifecycle, kubeconfig, in-process controllers -----

class Controller(Protocol):
    """An in-process actor on the store, e.g. the workload simulator."""
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


ControllerFactory = Callable[[Store], Controller]


class _AccessLogger(aiohttp.abc.AbstractAccessLogger):
    """Requests at DEBUG level: aiohttp's INFO-level access log floods the operators' logs."""

    def log(self, request: aiohttp.web.BaseRequest, response: aiohttp.web.StreamResponse,
            time: float) -> None:
        self.logger.debug(f'{request.method} {request.path_qs} -> {response.status} ({time:.3f}s)')


class SandboxAPIServer:
    """
    A Kubernetes API server on loopback for the real kopf operator & ``kubernetes`` client::

        async with SandboxAPIServer() as server:
            server.write_kubeconfig(path)
            ...
    """

    def __init__(self, *, resources: Iterable[ResourceSpec] = BUILTIN_RESOURCES,
                 controllers: Iterable[ControllerFactory] = (), history: int = 100_000) -> None:
        self.store = Store(resources, history=history)  # history: how far back watches can resume
        self.emulator = SandboxEmulator(store=self.store)
        self._controller_factories = tuple(controllers)
        self._controllers: list[Controller] = []
        self._runner: aiohttp.web.ServerRunner | None = None
        self._url: str | None = None
        self._stopped = False

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError('The sandbox API server is not started.')
        return self._url

    async def start(self, host: str = '127.0.0.1', port: int = 0) -> None:
        if self._runner is not None or self._stopped:
            raise RuntimeError('The sandbox API server can be started only once.')
        existing = {ns['metadata']['name'] for ns in (await self.store.list('namespaces'))['items']}
        for name in set(DEFAULT_NAMESPACES) - existing:
            await self.store.create('namespaces', {'metadata': {'name': name}})
        await self.emulator.__aenter__()
        # Not kmock.Server: it patches aiohttp's DNS resolution process-wide (fragile when servers
        # and clients run in several threads), and it cannot cancel handlers of gone clients,
        # which would leave idle watch-streams hanging forever.
        server = aiohttp.web.Server(self.emulator, handler_cancellation=True,
                                    access_log_class=_AccessLogger, access_log=logger)
        self._runner = aiohttp.web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self._url = f'http://{bound_host}:{bound_port}'
        for factory in self._controller_factories:
            controller = factory(self.store)
            await controller.start()
            self._controllers.append(controller)
        logger.debug(f'The sandbox API server is listening at {self._url}')

    async def stop(self) -> None:
        self._stopped = True
        for controller in reversed(self._controllers):
            await controller.stop()
        self._controllers.clear()
        self.store.close()  # end the watch-streams, or the shutdown waits for them
        if self._runner is not None:
            await self._runner.cleanup()
            await self.emulator.__aexit__(None, None, None)
        self._runner = None
        self._url = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc_value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.stop()

    async def install_crd(self, crd: Mapping[str, Any]) -> JsonObject:
        """Create (or replace) a CRD in-process; its resource is served right away."""
        return await self.store.install_crd(crd)

    def write_kubeconfig(self, path: str | pathlib.Path) -> pathlib.Path:
        """A kubeconfig for kopf, the kubernetes client, and kubectl (context ``sluice-sandbox``)."""
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            'apiVersion': 'v1',
            'kind': 'Config',
            'clusters': [{'name': KUBECONFIG_CONTEXT,
                          'cluster': {'server': self.url, 'insecure-skip-tls-verify': True}}],
            # The sandbox checks no credentials, but clients insist on having some.
            'users': [{'name': KUBECONFIG_CONTEXT, 'user': {'token': 'sandbox-token'}}],
            'contexts': [{'name': KUBECONFIG_CONTEXT, 'context': {
                'cluster': KUBECONFIG_CONTEXT, 'user': KUBECONFIG_CONTEXT, 'namespace': 'default'}}],
            'current-context': KUBECONFIG_CONTEXT,
            'preferences': {},
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding='utf-8')
        return path


class SandboxThread:
    """
    Runs a :class:`SandboxAPIServer` on its own event loop in a daemon thread, so that sync code
    (tests with the sync ``kubernetes`` client, CLIs) can use it::

        with SandboxThread(kubeconfig=tmp_path / 'kubeconfig') as sandbox:
            kubernetes.config.load_kube_config(config_file=str(sandbox.kubeconfig))
            sandbox.run(sandbox.store.get('deployments', 'default', 'web'))
    """

    def __init__(self, *, kubeconfig: str | pathlib.Path | None = None, host: str = '127.0.0.1',
                 port: int = 0, server_factory: Callable[[], SandboxAPIServer] = SandboxAPIServer) -> None:
        self._kubeconfig_path = kubeconfig
        self._host, self._port = host, port
        self._server_factory = server_factory
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: SandboxAPIServer | None = None
        self._kubeconfig: pathlib.Path | None = None

    @property
    def server(self) -> SandboxAPIServer:
        if self._server is None:
            raise RuntimeError('The sandbox is not started.')
        return self._server

    @property
    def store(self) -> Store:
        return self.server.store

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def kubeconfig(self) -> pathlib.Path:
        if self._kubeconfig is None:
            raise RuntimeError('The sandbox is not started.')
        return self._kubeconfig

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError('The sandbox is not started.')
        return self._loop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30) -> T:
        """Run a coroutine (e.g. a store call) on the sandbox's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait_for(self, resource: str | ResourceSpec, namespace: str | None, name: str | None,
                 predicate: Callable[[JsonObject], bool], *, timeout: float = 10) -> JsonObject:
        """Block until the object satisfies the predicate (see :meth:`Store.wait_for`)."""
        return self.run(self.store.wait_for(resource, namespace, name, predicate, timeout=timeout),
                        timeout=timeout + 5)

    def wait_for_deletion(self, resource: str | ResourceSpec, namespace: str | None, name: str,
                          *, timeout: float = 10) -> None:
        """Block until the object is gone (see :meth:`Store.wait_for_deletion`)."""
        self.run(self.store.wait_for_deletion(resource, namespace, name, timeout=timeout),
                 timeout=timeout + 5)

    def start(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name='sandbox-apiserver', daemon=True)
        self._thread.start()
        try:
            self._server = self.run(self._start_server())
            if self._kubeconfig_path is None:
                self._tempdir = tempfile.TemporaryDirectory(prefix='sluice-sandbox-')
                self._kubeconfig_path = pathlib.Path(self._tempdir.name) / 'kubeconfig'
            self._kubeconfig = self._server.write_kubeconfig(self._kubeconfig_path)
        except BaseException:
            self.stop()  # do not leak the thread & the loop
            raise
        return self

    async def _start_server(self) -> SandboxAPIServer:
        # Created on the loop's thread: kmock's and the store's asyncio primitives belong to it.
        server = self._server_factory()
        await server.start(self._host, self._port)
        return server

    def stop(self) -> None:
        if self._server is not None:
            self.run(self._server.stop())
            self._server = None
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
        self._loop = self._thread = None
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc_value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def with_controllers(*controllers: ControllerFactory) -> Callable[[], SandboxAPIServer]:
    """A server factory for :class:`SandboxThread` with in-process controllers (simulators)."""
    return functools.partial(SandboxAPIServer, controllers=controllers)
