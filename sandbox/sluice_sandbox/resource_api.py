"""
The resource endpoints of the sandbox API server: HTTP requests translated into store calls.

Beyond CRUD, patches, watches and subresources, this is where the API server's HTTP-level
behaviours live: ``fieldValidation`` (and the ``Warning`` headers of ``Warn``), server-side
printing (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``, for lists, single objects and
watch events), DeleteOptions from the body or the query, the 415 for unsupported bodies, and who
writes: the ``fieldManager`` query parameter, else the first word of the User-Agent (as the API
server names managers in ``metadata.managedFields``; server-side apply needs the parameter).

Everything read from the store here is only serialised, so it is read ``shared`` (the store's own
objects, uncopied), and watch-streams send the store's encoded events (one encoding per change for
all watchers, see :meth:`Watch.chunks`).
"""

import json
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypedDict

import aiohttp.web
import kmock
import multidict
import yaml

from sluice_sandbox import fieldmanager, patching, protobuf, tables
from sluice_sandbox.errors import ApiError
from sluice_sandbox.resources import FieldValidation, JsonObject, ResourceSpec
from sluice_sandbox.routing import Route, is_watch, parse_route
from sluice_sandbox.store import Store, Watch

# Told the status of a watch-stream's response once its headers are sent (the request log's cue).
StreamStarted = Callable[[int], None]


class ResourceApi:
    """Serves the resource endpoints (CRUD, patch, watch, subresources) from the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def serve(
        self,
        request: kmock.Request,
        raw_request: aiohttp.web.BaseRequest,
        stream_started: StreamStarted | None = None,
    ) -> aiohttp.web.StreamResponse:
        route = parse_route(raw_request.path)
        assert route is not None and route.version is not None and route.plural is not None  # by the caller
        spec = self.store.lookup(route.group, route.version, route.plural)
        if spec is None or (route.namespace is not None and not spec.namespaced):
            raise ApiError.resource_not_found()
        self._check_verb(spec, request.method, route)
        params = request.params
        sub = route.subresource
        namespace, name = route.namespace, route.name
        printer = _Printer.negotiate(spec, request) if request.method == "GET" and sub is None else None
        if request.method == "GET" and is_watch(params, route):
            return await self._stream(raw_request, self._watch(spec, route, params), printer, stream_started)
        dry_run = "dryRun" in params
        warnings: list[str] = []
        write = _Write(
            dry_run=dry_run,
            field_validation=_field_validation(params),
            warnings=warnings,
            shared=True,
            field_manager=params.get("fieldManager")
            or fieldmanager.manager_from_user_agent(request.headers.get("User-Agent")),
        )
        match request.method, name:
            case "GET", None:
                listed = await self.store.list(
                    spec, namespace, params.get("labelSelector"), params.get("fieldSelector"), shared=True
                )
                return _json(
                    listed
                    if printer is None
                    else printer.table(listed["items"], listed["metadata"]["resourceVersion"])
                )
            case "GET", str():
                obj = await self.store.get(spec, namespace, name, subresource=sub, shared=True)
                return _json(obj if printer is None else printer.table([obj]))
            case "POST", None:
                created = await self.store.create(spec, _read_body(request), namespace, **write)
                return _json(created, status=201, warnings=warnings)
            case "PUT", str():
                replaced = await self.store.replace(
                    spec, namespace, name, _read_body(request), subresource=sub, **write
                )
                return _json(replaced, warnings=warnings)
            case "PATCH", str():
                patch_type = _patch_type(request)
                if patch_type is patching.PatchType.APPLY:
                    # An applier must name itself: no manager is derived from its User-Agent.
                    write["field_manager"] = params.get("fieldManager")
                    applied, was_created = await self.store.apply(
                        spec,
                        namespace,
                        name,
                        _read_body(request),
                        subresource=sub,
                        force=_bool_param(params, "force"),
                        **write,
                    )
                    return _json(applied, status=201 if was_created else 200, warnings=warnings)
                patched = await self.store.patch(
                    spec,
                    namespace,
                    name,
                    _read_body(request),
                    patch_type=patch_type,
                    subresource=sub,
                    force=_bool_param(params, "force"),
                    **write,
                )
                return _json(patched, warnings=warnings)
            case "DELETE", str():
                options = _delete_options(request)
                deleted = await self.store.delete(
                    spec, namespace, name, dry_run=dry_run, shared=True, **options
                )
                return _json(_deletion_result(spec, deleted))
            case "DELETE", None:
                options = _delete_options(request)
                return _json(
                    await self.store.delete_collection(
                        spec,
                        namespace,
                        params.get("labelSelector"),
                        params.get("fieldSelector"),
                        propagation=options["propagation"],
                        grace_period=options["grace_period"],
                        dry_run=dry_run,
                    )
                )
        raise ApiError.method_not_allowed("the server does not allow this method on the requested resource")

    def _check_verb(self, spec: ResourceSpec, method: str, route: Route) -> None:
        if route.subresource is not None:
            if route.name is None or route.subresource not in spec.subresources:
                raise ApiError.resource_not_found()
            if method not in ("GET", "PUT", "PATCH"):  # i.e. SUBRESOURCE_VERBS
                raise ApiError.method_not_allowed("the server does not allow this method on the subresource")
            return
        collection = route.name is None
        verb = {
            ("GET", True): "list",
            ("GET", False): "get",
            ("POST", True): "create",
            ("PUT", False): "update",
            ("PATCH", False): "patch",
            ("DELETE", False): "delete",
            ("DELETE", True): "deletecollection",
        }.get((method, collection))
        if verb is not None and verb not in spec.verbs:
            raise ApiError.method_not_allowed(f"the server does not allow {verb} on {spec.qualified_plural}")

    def _watch(self, spec: ResourceSpec, route: Route, params: Mapping[str, str]) -> Watch:
        # A named object's URL watches only that object (the legacy form of a name selector).
        field_selectors = [params.get("fieldSelector"), f"metadata.name={route.name}" if route.name else None]
        return self.store.watch(
            spec,
            route.namespace,
            resource_version=params.get("resourceVersion"),
            label_selector=params.get("labelSelector"),
            field_selector=",".join(selector for selector in field_selectors if selector),
            send_initial_events=params.get("sendInitialEvents") == "true",
            timeout=_float_param(params, "timeoutSeconds"),
        )

    async def _stream(
        self,
        raw_request: aiohttp.web.BaseRequest,
        watch: Watch,
        printer: "_Printer | None",
        stream_started: StreamStarted | None,
    ) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw_request)  # send the headers now: clients wait for them
        if stream_started is not None:
            stream_started(response.status)
        try:
            try:
                async with watch as events:
                    if printer is None:
                        async for chunk in events.chunks():
                            await response.write(chunk)
                    else:
                        async for event in _printed(events, printer):
                            await response.write(json.dumps(event).encode() + b"\n")
            except ApiError as e:
                # E.g. 410 Gone for a too old resourceVersion: in-stream, as real servers do it,
                # so that clients (kopf, the kubernetes client) re-list and re-watch.
                await response.write(json.dumps({"type": "ERROR", "object": e.as_status()}).encode() + b"\n")
            await response.write_eof()
        except ConnectionError:
            pass  # the client has gone; nothing to tell it
        return response


class _Write(TypedDict):
    """The options of a write, as the store takes them."""

    dry_run: bool
    field_validation: FieldValidation
    warnings: list[str]
    shared: bool  # always True: the result is only serialised
    field_manager: str | None


class _Printer:
    """Server-side printing for one request that asked for Tables (see :mod:`tables`)."""

    def __init__(self, spec: ResourceSpec, version: str, include_object: str) -> None:
        self.spec, self.version, self.include_object = spec, version, include_object

    @classmethod
    def negotiate(cls, spec: ResourceSpec, request: kmock.Request) -> "_Printer | None":
        version = tables.accepted_table_version(request.headers.get("Accept"))
        if version is None:
            return None
        include_object = request.params.get("includeObject", "Metadata")
        if include_object not in ("None", "Metadata", "Object"):
            raise ApiError.bad_request(f"includeObject must be None, Metadata or Object: {include_object!r}")
        return cls(spec, version, include_object)

    def table(self, objects: Sequence[JsonObject], resource_version: str | None = None) -> JsonObject:
        """The objects as a Table; of one object, at its resourceVersion."""
        if resource_version is None:
            resource_version = objects[0]["metadata"]["resourceVersion"]
        return tables.to_table(
            self.spec,
            objects,
            resource_version=resource_version,
            version=self.version,
            include_object=self.include_object,
        )


async def _printed(events: AsyncIterator[JsonObject], printer: _Printer | None) -> AsyncIterator[JsonObject]:
    """Watch events with their objects as one-row Tables, if the client asked for Tables."""
    async for event in events:
        if printer is not None and event["type"] in ("ADDED", "MODIFIED", "DELETED"):
            event = {"type": event["type"], "object": printer.table([event["object"]])}
        yield event


def _json(payload: Any, status: int = 200, warnings: Sequence[str] = ()) -> aiohttp.web.Response:
    # Warnings as the API server sends them, one header each: clients (kubectl) print them.
    headers = multidict.CIMultiDict(("Warning", f"299 - {json.dumps(warning)}") for warning in warnings)
    return aiohttp.web.json_response(payload, status=status, headers=headers)


def _float_param(params: Mapping[str, str], name: str) -> float | None:
    if name not in params:
        return None
    try:
        return float(params[name])
    except ValueError:
        raise ApiError.bad_request(f"invalid value for {name}: {params[name]!r}") from None


def _bool_param(params: Mapping[str, str], name: str) -> bool | None:
    if name not in params:
        return None
    if params[name] not in ("true", "false"):
        raise ApiError.bad_request(f"invalid value for {name}: {params[name]!r} (true or false)")
    return params[name] == "true"


def _field_validation(params: Mapping[str, str]) -> FieldValidation:
    value = params.get("fieldValidation") or FieldValidation.WARN  # the API server's default
    try:
        return FieldValidation(value)
    except ValueError:
        raise ApiError.bad_request(f"fieldValidation must be Ignore, Warn or Strict: {value!r}") from None


def _read_body(request: kmock.Request) -> Any:
    if not request.body:
        raise ApiError.bad_request("the request has no body")
    content_type = request.headers.get("Content-Type", "")
    if content_type.startswith(protobuf.MEDIA_TYPE):
        try:
            return protobuf.decode_object(request.body)
        except protobuf.ProtobufError as e:
            raise ApiError.unsupported_media_type(str(e)) from e
    try:
        # Apply bodies are YAML, or JSON (kubectl's): JSON is YAML, but much quicker read as JSON.
        if "yaml" in content_type and not request.body.lstrip().startswith(b"{"):
            return yaml.safe_load(request.body)
        return json.loads(request.body)
    except (ValueError, yaml.YAMLError) as e:
        raise ApiError.bad_request(f"the request body cannot be decoded: {e}") from e


def _patch_type(request: kmock.Request) -> patching.PatchType:
    try:
        return patching.parse_patch_type(request.headers.get("Content-Type"))
    except patching.UnsupportedPatchError as e:
        raise ApiError.unsupported_media_type(str(e)) from e


def _delete_options(request: kmock.Request) -> dict[str, Any]:
    """DeleteOptions from the body (kubernetes client, kubectl) and/or the query (kopf, curl)."""
    body = request.data if isinstance(request.data, Mapping) else {}
    propagation = request.params.get("propagationPolicy") or body.get("propagationPolicy")
    orphan = request.params.get("orphanDependents", body.get("orphanDependents"))
    if propagation is None and orphan in (True, "true"):
        propagation = "Orphan"  # the deprecated predecessor of propagationPolicy
    if propagation not in (None, "Background", "Foreground", "Orphan"):
        raise ApiError.bad_request(f"unsupported propagationPolicy: {propagation!r}")
    return {
        "propagation": propagation,
        "preconditions": body.get("preconditions"),
        "grace_period": _grace_period(
            request.params.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
        ),
    }


def _grace_period(value: Any) -> int | None:
    """DeleteOptions' ``gracePeriodSeconds``: an integer, from the query (a string) or the body."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        return int(value)
    raise ApiError.bad_request(f"invalid gracePeriodSeconds: {value!r}")


def _deletion_result(spec: ResourceSpec, obj: JsonObject) -> JsonObject:
    meta = obj["metadata"]
    if meta.get("finalizers") or meta.get("deletionGracePeriodSeconds") or not spec.builtin:
        return obj  # pending deletions (finalizers, a grace period) and custom resources return the object
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": meta["name"], "group": spec.group, "kind": spec.plural, "uid": meta["uid"]},
    }
