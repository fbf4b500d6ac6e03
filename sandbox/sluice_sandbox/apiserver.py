"""
The sandbox API server: an in-process Kubernetes API on loopback, built on kmock.

kmock's ``KubernetesEmulator`` provides the request model, the DSL of reactions (used here for
discovery, ``/version``, unknown endpoints, and fault injection by tests), and the rendering
of errors as ``kind: Status``. The object semantics live in :class:`~sluice_sandbox.store.Store`
(kmock only merges dicts); :class:`~sluice_sandbox.resource_api.ResourceApi` translates HTTP
into store calls. The OpenAPI documents (:mod:`sluice_sandbox.openapi`) are served here too.

Two kmock behaviours are deliberately bypassed:

* URL parsing: see :mod:`sluice_sandbox.routing`.
* Matching every request against the DSL: kmock re-filters its whole request log on each
  request (O(n) per request), too slow for an operator making thousands of requests. So resource
  requests go straight to the store unless a test registered reactions of its own; only the
  requests that go through the DSL are recorded in kmock's request log.

Every request, whichever way it is served, is recorded in the sandbox's own request log
(:mod:`sluice_sandbox.requestlog`): :attr:`SandboxAPIServer.requests`.
"""

import asyncio
import functools
import logging
import math
import pathlib
import re
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import aiohttp.abc
import aiohttp.web
import attrs
import kmock
import yaml

from sluice_sandbox import discovery
from sluice_sandbox.builtin_resources import BUILTIN_RESOURCES
from sluice_sandbox.errors import ApiError
from sluice_sandbox.openapi import OpenApiDocuments
from sluice_sandbox.requestlog import CLIENT_GONE, RequestLog, RequestRecord
from sluice_sandbox.resource_api import ResourceApi, StreamStarted
from sluice_sandbox.resources import JsonObject, ResourceSpec
from sluice_sandbox.routing import parse_request
from sluice_sandbox.store import Store

logger = logging.getLogger(__name__)

T = TypeVar("T")

KUBECONFIG_CONTEXT = "sluice-sandbox"
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


# ----- kmock: routing, discovery, errors -----


@attrs.define(kw_only=True)
class SandboxEmulator(kmock.KubernetesEmulator):
    """
    kmock's Kubernetes emulator with the object semantics delegated to a :class:`Store`.

    Tests may still add kmock reactions (``emulator['patch', kmock.resource(...)] << 500``)
    to inject faults: they take precedence over the store while they are registered.
    """

    store: Store
    request_log: RequestLog = attrs.field(factory=RequestLog)
    _api: ResourceApi = attrs.field(init=False)
    _openapi: OpenApiDocuments = attrs.field(init=False, factory=OpenApiDocuments)

    def __attrs_post_init__(self) -> None:
        # Only the scaffold (discovery, /version, 404s): the emulator's own dict-merging object
        # tracking is replaced by the store, so its reactions are deliberately not registered.
        kmock.KubernetesScaffold.__attrs_post_init__(self)
        self._api = ResourceApi(self.store)
        self.fallback["get", re.compile(r"/(healthz|livez|readyz)")] << b"ok"
        # Resource requests that tests' reactions let through fall through to the store. It is
        # signalled by an exception (kmock re-raises exception payloads) because kmock's rendering
        # of callbacks' responses cannot carry statuses such as 201 Created safely.
        (self.fallback**1)[_is_resource_request] << _ServeFromStore

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        arrived = time.monotonic()
        recorded = False

        def record(status: int) -> None:
            # Once per request: when a watch-stream starts (it may last minutes), else at the end.
            nonlocal recorded
            if not recorded:
                recorded = True
                user_agent = raw_request.headers.get("User-Agent", "")
                self.request_log.record(
                    RequestRecord(
                        arrived,
                        raw_request.method,
                        raw_request.path,
                        raw_request.query_string,
                        user_agent,
                        status,
                    )
                )

        try:
            response = await self._respond(raw_request, record)
        except asyncio.CancelledError:
            record(CLIENT_GONE)
            raise
        record(response.status)
        return response

    async def _respond(
        self, raw_request: aiohttp.web.BaseRequest, stream_started: StreamStarted
    ) -> aiohttp.web.StreamResponse:
        body = await raw_request.read()
        try:
            if raw_request.path.startswith("/openapi/"):
                return self._serve_openapi(raw_request)  # not through kmock: no test fakes it
            request = parse_request(raw_request, body, id=len(self._requests))
            if _is_resource_request(request) and not self._has_reactions():
                return await self._api.serve(request, raw_request, stream_started)  # the fast path
            self._requests.append(request)  # kmock's views only see the requests in the log
            try:
                return await self._handle(request)
            except _ServeFromStore:
                return await self._api.serve(request, raw_request, stream_started)
        except kmock.KubernetesError as e:  # API answers such as 404 or 409: not worth logging
            return await self._render_error(e)
        except Exception as e:
            logger.exception(f"The sandbox API server failed on {raw_request.method} {raw_request.path_qs}")
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
        return {
            "major": "1",
            "minor": "32",
            "gitVersion": "v1.32.0+sluice-sandbox",
            "gitTreeState": "clean",
            "gitCommit": "",
            "buildDate": "",
            "goVersion": "",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    async def _serve_api(self, request: kmock.Request) -> kmock.Payload:
        return discovery.api_versions(f"{request.url.host}:{request.url.port}")

    async def _serve_apis(self, request: kmock.Request) -> kmock.Payload:
        return discovery.api_group_list(self.store.resources)

    async def _serve_group(self, request: kmock.Request) -> kmock.Payload:
        group = request.resource.group if request.resource is not None else None
        return _found(discovery.api_group(self.store.resources, group or ""))

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        group = request.resource.group if request.resource is not None else None
        version = request.resource.version if request.resource is not None else None
        return _found(discovery.api_resource_list(self.store.resources, group or "", version or ""))

    def _serve_openapi(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.Response:
        self._openapi.refresh(self.store.registry_version, self.store.resources)
        path = raw_request.path.rstrip("/")
        if path == "/openapi/v3":
            return aiohttp.web.json_response(self._openapi.v3_index())
        if path == "/openapi/v2":
            # kubectl asks for protobuf only, and copes without the document (see openapi.py).
            if not _accepts_json(raw_request.headers.get("Accept")):
                raise ApiError.not_acceptable("only application/json is served at /openapi/v2")
            return aiohttp.web.Response(body=self._openapi.v2(), content_type="application/json")
        document = self._openapi.v3(path.removeprefix("/openapi/v3/"))
        if not path.startswith("/openapi/v3/") or document is None:
            raise ApiError.resource_not_found()
        return aiohttp.web.Response(body=document, content_type="application/json")


def _found(document: JsonObject | None) -> JsonObject:
    if document is None:
        raise ApiError.resource_not_found()
    return document


def _accepts_json(accept: str | None) -> bool:
    media_types = {media_range.split(";")[0].strip() for media_range in (accept or "*/*").split(",")}
    return bool(media_types & {"application/json", "application/*", "*/*"})


class _ServeFromStore(Exception):
    """Raised by the fallback reaction: this resource request is for the store to serve."""


def _is_resource_request(request: kmock.Request) -> bool:
    return request.resource is not None and request.resource.plural is not None


# ----- The server: lifecycle, kubeconfig, in-process controllers -----


class Controller(Protocol):
    """An in-process actor on the store, e.g. the workload simulator."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


ControllerFactory = Callable[[Store], Controller]


class _AccessLogger(aiohttp.abc.AbstractAccessLogger):
    """
    Requests at DEBUG level: aiohttp's INFO-level access log floods the operators' logs.
    ``GET /api/v1/pods?watch=true -> 200 (12.003s) "kopf/1.45.2"``: the user agent last, so
    that readers matching the start of the line (bench/release_bench.py) still do.
    """

    def log(
        self, request: aiohttp.web.BaseRequest, response: aiohttp.web.StreamResponse, time: float
    ) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):  # not even formatted otherwise: one per request
            user_agent = request.headers.get("User-Agent", "")
            self.logger.debug(
                f'{request.method} {request.path_qs} -> {response.status} ({time:.3f}s) "{user_agent}"'
            )


class SandboxAPIServer:
    """
    A Kubernetes API server on loopback for the real kopf operator & ``kubernetes`` client::

        async with SandboxAPIServer() as server:
            server.write_kubeconfig(path)
            ...
    """

    def __init__(
        self,
        *,
        resources: Iterable[ResourceSpec] = BUILTIN_RESOURCES,
        controllers: Iterable[ControllerFactory] = (),
        history: int = 100_000,
        request_log_limit: int = 100_000,
    ) -> None:
        self.store = Store(resources, history=history)  # history: how far back watches can resume
        self.emulator = SandboxEmulator(store=self.store, request_log=RequestLog(request_log_limit))
        self._controller_factories = tuple(controllers)
        self._controllers: list[Controller] = []
        self._runner: aiohttp.web.ServerRunner | None = None
        self._url: str | None = None
        self._stopped = False

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("The sandbox API server is not started.")
        return self._url

    @property
    def requests(self) -> RequestLog:
        """Every HTTP request answered (see :mod:`sluice_sandbox.requestlog`); readable from any thread."""
        return self.emulator.request_log

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self._runner is not None or self._stopped:
            raise RuntimeError("The sandbox API server can be started only once.")
        existing = {ns["metadata"]["name"] for ns in (await self.store.list("namespaces"))["items"]}
        for name in set(DEFAULT_NAMESPACES) - existing:
            await self.store.create("namespaces", {"metadata": {"name": name}})
        await self.emulator.__aenter__()
        # Not kmock.Server: it patches aiohttp's DNS resolution process-wide (fragile when servers
        # and clients run in several threads), and it cannot cancel handlers of gone clients,
        # which would leave idle watch-streams hanging forever.
        server = aiohttp.web.Server(
            self.emulator, handler_cancellation=True, access_log_class=_AccessLogger, access_log=logger
        )
        self._runner = aiohttp.web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self._url = f"http://{bound_host}:{bound_port}"
        for factory in self._controller_factories:
            controller = factory(self.store)
            await controller.start()
            self._controllers.append(controller)
        logger.debug(f"The sandbox API server is listening at {self._url}")

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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def install_crd(self, crd: Mapping[str, Any]) -> JsonObject:
        """Create (or replace) a CRD in-process; its resource is served right away."""
        return await self.store.install_crd(crd)

    def write_kubeconfig(self, path: str | pathlib.Path) -> pathlib.Path:
        """A kubeconfig for kopf, the kubernetes client, and kubectl (context ``sluice-sandbox``)."""
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": KUBECONFIG_CONTEXT,
                    "cluster": {"server": self.url, "insecure-skip-tls-verify": True},
                }
            ],
            # The sandbox checks no credentials, but clients insist on having some.
            "users": [{"name": KUBECONFIG_CONTEXT, "user": {"token": "sandbox-token"}}],
            "contexts": [
                {
                    "name": KUBECONFIG_CONTEXT,
                    "context": {
                        "cluster": KUBECONFIG_CONTEXT,
                        "user": KUBECONFIG_CONTEXT,
                        "namespace": "default",
                    },
                }
            ],
            "current-context": KUBECONFIG_CONTEXT,
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return path


class SandboxThread:
    """
    Runs a :class:`SandboxAPIServer` on its own event loop in a daemon thread, so that sync code
    (tests with the sync ``kubernetes`` client, CLIs) can use it::

        with SandboxThread(kubeconfig=tmp_path / 'kubeconfig') as sandbox:
            kubernetes.config.load_kube_config(config_file=str(sandbox.kubeconfig))
            sandbox.run(sandbox.store.get('deployments', 'default', 'web'))
    """

    def __init__(
        self,
        *,
        kubeconfig: str | pathlib.Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        server_factory: Callable[[], SandboxAPIServer] = SandboxAPIServer,
    ) -> None:
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
            raise RuntimeError("The sandbox is not started.")
        return self._server

    @property
    def store(self) -> Store:
        return self.server.store

    @property
    def requests(self) -> RequestLog:
        """The server's request log (see :attr:`SandboxAPIServer.requests`)."""
        return self.server.requests

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def kubeconfig(self) -> pathlib.Path:
        if self._kubeconfig is None:
            raise RuntimeError("The sandbox is not started.")
        return self._kubeconfig

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("The sandbox is not started.")
        return self._loop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30) -> T:
        """Run a coroutine (e.g. a store call) on the sandbox's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait_for(
        self,
        resource: str | ResourceSpec,
        namespace: str | None,
        name: str | None,
        predicate: Callable[[JsonObject], bool],
        *,
        timeout: float = 10,
    ) -> JsonObject:
        """Block until the object satisfies the predicate (see :meth:`Store.wait_for`)."""
        return self.run(
            self.store.wait_for(resource, namespace, name, predicate, timeout=timeout), timeout=timeout + 5
        )

    def wait_for_deletion(
        self, resource: str | ResourceSpec, namespace: str | None, name: str, *, timeout: float = 10
    ) -> None:
        """Block until the object is gone (see :meth:`Store.wait_for_deletion`)."""
        self.run(
            self.store.wait_for_deletion(resource, namespace, name, timeout=timeout), timeout=timeout + 5
        )

    def start(self) -> Self:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sandbox-apiserver", daemon=True)
        self._thread.start()
        try:
            self._server = self.run(self._start_server())
            if self._kubeconfig_path is None:
                self._tempdir = tempfile.TemporaryDirectory(prefix="sluice-sandbox-")
                self._kubeconfig_path = pathlib.Path(self._tempdir.name) / "kubeconfig"
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def with_controllers(*controllers: ControllerFactory) -> Callable[[], SandboxAPIServer]:
    """A server factory for :class:`SandboxThread` with in-process controllers (simulators)."""
    return functools.partial(SandboxAPIServer, controllers=controllers)
