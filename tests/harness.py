"""What the scenario tests drive: a cluster (sandbox or kind) and the real operator in a thread.

The same scenarios run against the sandbox API server (tests/integration) and
a kind cluster (e2e/): they only use the Kubernetes API, through the real
``kubernetes`` client, and wait for conditions with deadlines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from operators.api.base import API_VERSION
from operators.api.crdgen import render_crds
from operators.application.reconciler import application_key
from operators.foundation.cluster import Cluster, KubeError, load_api_client
from operators.foundation.keys import ObjectKey
from operators.operator import OperatorOptions
from operators.operator_thread import OperatorThread
from operators.rollout.inventory import rollout_key
from operators.sidecarset.reconciler import sidecarset_key
from tests.reference import HTTPROUTES, ISTIO_NETWORKING, upstream_crd, upstream_crd_of

POLL_SECONDS = 0.1


def httproute_crd() -> dict[str, Any]:
    """The upstream HTTPRoute CRD from ../shared/reference (a skip without it; a failure with CI=true)."""
    return upstream_crd(HTTPROUTES)


def virtualservice_crd() -> dict[str, Any]:
    """Istio's VirtualService CRD from ../shared/reference (a skip without it; a failure with CI=true)."""
    return upstream_crd_of("VirtualService", ISTIO_NETWORKING)


def sluice_crds() -> list[dict[str, Any]]:
    """Sluice's own CRDs, generated from the models exactly as `sluice crds` prints them."""
    return [yaml.safe_load(text) for text in render_crds().values()]


def deployment(namespace: str, name: str) -> ObjectKey:
    return ObjectKey("apps/v1", "Deployment", namespace, name)


def service(namespace: str, name: str) -> ObjectKey:
    return ObjectKey("v1", "Service", namespace, name)


def httproute(namespace: str, name: str) -> ObjectKey:
    return ObjectKey("gateway.networking.k8s.io/v1", "HTTPRoute", namespace, name)


def virtualservice(namespace: str, name: str) -> ObjectKey:
    return ObjectKey("networking.istio.io/v1", "VirtualService", namespace, name)


class Harness:
    """Reads, writes and waits on a cluster through the real kubernetes client."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.cluster = Cluster(load_api_client(str(kubeconfig)))

    def ensure_namespace(self, namespace: str) -> None:
        try:
            self.cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        except KubeError as error:
            if error.status != 409:
                raise

    def create_in(self, namespace: str, kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a Sluice resource of `kind` from `body` (metadata and spec) in `namespace`."""
        obj = {"apiVersion": API_VERSION, "kind": kind, **body}
        obj["metadata"] = {**obj.get("metadata", {}), "namespace": namespace}
        return self.cluster.create(obj)

    def read(self, key: ObjectKey) -> dict[str, Any]:
        """The live object, which must exist."""
        body = self.cluster.get(key)
        assert body is not None, f"{key.kind} {key.namespace}/{key.name} is gone"
        return body

    def apply_rollout(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.create_in(namespace, "Rollout", body)

    def rollout(self, namespace: str, name: str) -> dict[str, Any]:
        return self.read(rollout_key(namespace, name))

    def patch_rollout(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return self.cluster.merge_patch(rollout_key(namespace, name), patch)

    def set_image(self, namespace: str, name: str, image: str) -> None:
        body = self.rollout(namespace, name)
        containers = body["spec"]["template"]["spec"]["containers"]
        containers[0]["image"] = image
        self.patch_rollout(namespace, name, {"spec": {"template": {"spec": {"containers": containers}}}})

    def annotate(self, namespace: str, name: str, key: str, value: str) -> None:
        self.patch_rollout(namespace, name, {"metadata": {"annotations": {key: value}}})

    def get(self, key: ObjectKey) -> dict[str, Any] | None:
        return self.cluster.get(key)

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        items = self.cluster.request("GET", f"/api/v1/namespaces/{namespace}/events").get("items", [])
        return [e for e in items if e.get("involvedObject", {}).get("name") == name]

    def wait_rollout(
        self,
        namespace: str,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float,
        what: str,
    ) -> dict[str, Any]:
        """Poll the Rollout until ``predicate`` holds; fail with its last status after ``timeout``."""
        return self.wait(lambda: self.rollout(namespace, name), predicate, timeout, what)

    def apply_application(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.create_in(namespace, "Application", body)

    def application(self, namespace: str, name: str) -> dict[str, Any]:
        return self.read(application_key(namespace, name))

    def patch_application(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return self.cluster.merge_patch(application_key(namespace, name), patch)

    def apply_sidecarset(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a SidecarSet (cluster-scoped) from `body` (metadata and spec)."""
        return self.cluster.create({"apiVersion": API_VERSION, "kind": "SidecarSet", **body})

    def sidecarset(self, name: str) -> dict[str, Any]:
        return self.read(sidecarset_key(name))

    def patch_sidecarset(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return self.cluster.merge_patch(sidecarset_key(name), patch)

    def wait_object(
        self, key: ObjectKey, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        """Poll an object (which must exist) until ``predicate`` holds; fail after ``timeout``."""
        return self.wait(lambda: self.read(key), predicate, timeout, what)

    def wait(
        self, read: Callable[[], Any], predicate: Callable[[Any], bool], timeout: float, what: str
    ) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = read()
            except KubeError as error:
                last = error
            else:
                if predicate(last):
                    return last
            time.sleep(POLL_SECONDS)  # polling interval between reads, bounded by the deadline
        status = last.get("status") if isinstance(last, dict) else last
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {status}")


def status_of(body: Mapping[str, Any]) -> dict[str, Any]:
    return dict(body.get("status") or {})


def route_weights(route: Mapping[str, Any] | None) -> dict[str, int]:
    if not route:
        return {}
    refs = route["spec"]["rules"][0]["backendRefs"]
    return {ref["name"]: int(ref.get("weight", 1)) for ref in refs}


def virtualservice_weights(virtual_service: Mapping[str, Any] | None) -> dict[str, int]:
    """Weight by destination host of a VirtualService's first HTTP route."""
    if not virtual_service:
        return {}
    destinations = virtual_service["spec"]["http"][0]["route"]
    return {d["destination"]["host"]: int(d.get("weight", 100)) for d in destinations}


@contextmanager
def running_operator(options: OperatorOptions) -> Iterator[OperatorThread]:
    operator = OperatorThread(options).start()
    try:
        yield operator
    finally:
        operator.stop()
