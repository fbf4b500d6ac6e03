"""A small, generic Kubernetes REST layer on the official ``kubernetes`` client.

The operator handles a few kinds it knows by ObjectKey (apiVersion, kind,
namespace, name); going through ``ApiClient`` directly keeps them all on one
code path with plain dicts, instead of one typed API class per kind.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from operators.foundation.keys import ObjectKey, key_of, plural_of
from operators.foundation.telemetry import count_api_request

_NO_SUCH_KIND = ("Resource Not Found", "Endpoint Not Found")
REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read: a hung API server must not hang a release loop
# The field manager of everything the operator writes with server-side apply: the fields it owns
# carry this name in managedFields, so a GitOps tool's fields and ours never overwrite each other.
FIELD_MANAGER = "sluice"
APPLY_PATCH = "application/apply-patch+yaml"


class KubeError(Exception):
    """An API request failed; ``status`` is the HTTP code, ``message`` the server's words."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message


class ResourceNotInstalled(KubeError):
    """The kind itself is not served, e.g. HTTPRoute without the Gateway API CRDs."""


def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """An ApiClient from a kubeconfig, else the in-cluster service account."""
    configuration = k8s.Configuration()
    try:
        k8s_config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    except k8s_config.ConfigException:
        if kubeconfig:
            raise
        k8s_config.load_incluster_config(client_configuration=configuration)
    return k8s.ApiClient(configuration)


def object_path(key: ObjectKey, subresource: str = "") -> str:
    return (
        collection_path(key.api_version, key.kind, key.namespace)
        + f"/{key.name}"
        + (f"/{subresource}" if subresource else "")
    )


def collection_path(api_version: str, kind: str, namespace: str | None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    scope = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{scope}/{plural_of(kind)}"


class Cluster:
    """Reads and writes objects as dicts. Every request has a timeout."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api
        self.requests = 0  # counted for the benchmark: API requests per step

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        self.requests += 1
        serialized = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()) or None,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(*serialized, _request_timeout=REQUEST_TIMEOUT)
        except Exception:
            count_api_request(method, "error")  # no answer: refused, timed out, or fenced (not leading)
            raise
        count_api_request(method, response.status)
        response.read()
        text = response.data.decode() if isinstance(response.data, bytes) else str(response.data or "")
        payload = _json_or_text(text)
        if response.status >= 400:
            raise _error_from(response.status, payload)
        return payload if isinstance(payload, dict) else {}

    def get(self, key: ObjectKey) -> dict[str, Any] | None:
        """The live object, or None when it does not exist."""
        try:
            return self.request("GET", object_path(key))
        except ResourceNotInstalled:
            raise
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    def get_current(self, key: ObjectKey) -> dict[str, Any] | None:
        """The live object, or None when it does not exist or is being deleted: nothing to reconcile."""
        body = self.get(key)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return None
        return body

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        key = key_of(obj)
        return self.request("POST", collection_path(key.api_version, key.kind, key.namespace), dict(obj))

    def merge_patch(self, key: ObjectKey, patch: Mapping[str, Any], subresource: str = "") -> dict[str, Any]:
        return self.request(
            "PATCH", object_path(key, subresource), dict(patch), "application/merge-patch+json"
        )

    def apply(
        self, obj: Mapping[str, Any], subresource: str = "", field_manager: str = FIELD_MANAGER
    ) -> dict[str, Any]:
        """Server-side apply `obj` as `field_manager`: create it, or set the fields it names.

        Fields others own (a GitOps tool's labels, an API server default) are left alone; fields
        we applied before and no longer name are removed. Forced: what Sluice renders is Sluice's
        to decide (the weights, the replicas), as a controller's own objects are. A
        metadata.resourceVersion in `obj` is a precondition: a 409 if the object changed since.
        """
        return self.request(
            "PATCH",
            object_path(key_of(obj), subresource),
            dict(obj),  # JSON is YAML: the apply content type takes either
            APPLY_PATCH,
            query={"fieldManager": field_manager, "force": "true"},
        )

    def list_objects(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        """The objects of a kind (in a namespace), with apiVersion and kind set on each item."""
        query = {"labelSelector": label_selector} if label_selector else None
        listed = self.request("GET", collection_path(api_version, kind, namespace), query=query)
        return [{"apiVersion": api_version, "kind": kind, **item} for item in listed.get("items") or []]

    def delete(self, key: ObjectKey) -> None:
        """Delete an object; its dependents go with it (background propagation). Gone already is fine."""
        try:
            self.request("DELETE", object_path(key))
        except KubeError as error:
            if error.status != 404:
                raise


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return text


def _error_from(status: int, payload: Any) -> KubeError:
    if isinstance(payload, dict):
        message = str(payload.get("message") or payload)
        reason = str(payload.get("reason") or "")
    else:
        message, reason = str(payload).strip()[:500], ""
    # A 404 on a kind (not an object) means its CRD is not installed: no object name in the details.
    names_object = isinstance(payload, dict) and (payload.get("details") or {}).get("name")
    kind_missing = "the server could not find the requested resource" in message or reason in _NO_SUCH_KIND
    # kube-apiserver answers a path it serves nothing at (a kind whose CRD is not installed) with
    # a plain-text "404 page not found", not a Status; a missing object always gets a Status.
    kind_missing = kind_missing or not isinstance(payload, dict)
    if status == 404 and not names_object and kind_missing:
        return ResourceNotInstalled(status, message, reason)
    return KubeError(status, message, reason)
