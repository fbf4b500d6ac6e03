"""
The sandbox API server against real clients: the sync ``kubernetes`` client over loopback HTTP,
and a minimal real kopf operator.
"""

# The tests pass plain-dict manifests (as users write them) to the kubernetes client, which accepts
# them at runtime but types its parameters as models; and they read Optional model fields freely.
# mypy: disable-error-code="arg-type, union-attr"
import asyncio
import json
import pathlib
import textwrap
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import kmock
import kopf.testing
import kubernetes
import pytest
import yaml
from kubernetes.client import ApiClient, ApiException, AppsV1Api, CoreV1Api, CustomObjectsApi

from sluice_sandbox.apiserver import SandboxAPIServer, SandboxThread
from tests.reference import HTTPROUTES, upstream_crd

pytestmark = pytest.mark.integration

GATEWAY = "gateway.networking.k8s.io"
NS = "default"
WIDGETS = ("sandbox.sluice.dev", "v1", "widgets")
WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.sandbox.sluice.dev"},
    "spec": {
        "group": "sandbox.sluice.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wdg"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


@pytest.fixture
def api_client(kubeconfig: pathlib.Path) -> Iterator[ApiClient]:
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    yield client
    client.close()


@pytest.fixture
def apps(api_client: ApiClient) -> AppsV1Api:
    return AppsV1Api(api_client)


@pytest.fixture
def core(api_client: ApiClient) -> CoreV1Api:
    return CoreV1Api(api_client)


@pytest.fixture
def custom(api_client: ApiClient) -> CustomObjectsApi:
    return CustomObjectsApi(api_client)


@pytest.fixture
def widgets_crd(api_client: ApiClient) -> dict[str, Any]:
    """The small CRD, created over HTTP as a client would do it."""
    extensions = kubernetes.client.ApiextensionsV1Api(api_client)
    return raw(extensions.create_custom_resource_definition, WIDGET_CRD)


def deployment(
    name: str,
    *,
    replicas: int = 2,
    labels: dict[str, str] | None = None,
    template_annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": template_annotations or {}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
            },
        },
    }


def api_error(call: Callable[[], Any]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as excinfo:
        call()
    return excinfo.value.status, json.loads(excinfo.value.body)


def as_dict(result: object) -> dict[str, Any]:
    """Custom objects come back as plain dicts, though the client types them as ``object``."""
    assert isinstance(result, dict)
    return result


def raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The JSON as served, not the client's model (which hides unknown fields)."""
    result: dict[str, Any] = call(*args, _preload_content=False, **kwargs).json()
    return result


# ----- Objects: CRUD & errors -----


def test_deployment_crud(apps: AppsV1Api) -> None:
    created = raw(apps.create_namespaced_deployment, NS, deployment("web"))
    meta = created["metadata"]
    assert meta["namespace"] == NS
    assert meta["generation"] == 1
    assert meta["uid"] and meta["creationTimestamp"]
    assert created["spec"]["replicas"] == 2

    fetched = apps.read_namespaced_deployment("web", NS)
    assert fetched.metadata.uid == meta["uid"]
    assert fetched.metadata.resource_version == meta["resourceVersion"]

    listed = raw(apps.list_namespaced_deployment, NS)
    assert listed["kind"] == "DeploymentList" and listed["apiVersion"] == "apps/v1"
    assert [item["metadata"]["name"] for item in listed["items"]] == ["web"]
    assert int(listed["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"])

    body = raw(apps.read_namespaced_deployment, "web", NS)
    body["spec"]["replicas"] = 4
    del body["metadata"]["resourceVersion"]  # unconditional: the simulator may write the status meanwhile
    replaced = apps.replace_namespaced_deployment("web", NS, body)
    assert replaced.spec.replicas == 4
    assert replaced.metadata.generation == 2
    assert int(replaced.metadata.resource_version) > int(meta["resourceVersion"])

    patched = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 3}})
    assert patched.spec.replicas == 3
    unchanged = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 3}})
    assert unchanged.metadata.resource_version == patched.metadata.resource_version  # a no-op write

    deleted = raw(apps.delete_namespaced_deployment, "web", NS)
    assert (deleted["kind"], deleted["status"]) == ("Status", "Success")
    code, body = api_error(lambda: apps.read_namespaced_deployment("web", NS))
    assert code == 404
    assert body["kind"] == "Status" and body["reason"] == "NotFound"
    assert body["message"] == 'deployments.apps "web" not found'
    assert body["details"] == {"name": "web", "group": "apps", "kind": "deployments"}


def test_duplicate_create_is_409_already_exists(apps: AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment("web"))
    code, body = api_error(lambda: apps.create_namespaced_deployment(NS, deployment("web")))
    assert (code, body["reason"]) == (409, "AlreadyExists")
    assert body["message"] == 'deployments.apps "web" already exists'


def test_stale_resource_version_is_409_conflict(apps: AppsV1Api) -> None:
    stale = raw(apps.create_namespaced_deployment, NS, deployment("web"))
    apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 5}})

    stale["spec"]["replicas"] = 7
    code, body = api_error(lambda: apps.replace_namespaced_deployment("web", NS, stale))
    assert (code, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]

    patch = {"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]}, "spec": {"replicas": 7}}
    code, body = api_error(lambda: apps.patch_namespaced_deployment("web", NS, patch))
    assert (code, body["reason"]) == (409, "Conflict")
    assert apps.read_namespaced_deployment("web", NS).spec.replicas == 5


def test_invalid_bodies_are_422(apps: AppsV1Api, core: CoreV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment("web"))
    code, body = api_error(lambda: apps.replace_namespaced_deployment("web", NS, deployment("other")))
    assert (code, body["reason"]) == (422, "Invalid")

    code, body = api_error(lambda: core.create_namespaced_config_map(NS, {"metadata": {}}))
    assert (code, body["reason"]) == (422, "Invalid")

    mismatched = {"metadata": {"name": "cm", "namespace": "elsewhere"}}
    code, body = api_error(lambda: core.create_namespaced_config_map(NS, mismatched))
    assert (code, body["reason"]) == (422, "Invalid")


def test_generate_name(core: CoreV1Api) -> None:
    created = core.create_namespaced_config_map(NS, {"metadata": {"generateName": "cfg-"}})
    assert created.metadata.name.startswith("cfg-") and len(created.metadata.name) == len("cfg-") + 5


# ----- Generation & the status subresource -----


def test_generation_moves_only_on_desired_state_changes(apps: AppsV1Api) -> None:
    apps.create_namespaced_deployment(
        NS, deployment("web", template_annotations={"sandbox.sluice.dev/ready": "false"})
    )  # keep the simulator's status writes predictable

    def generation() -> int:
        return int(apps.read_namespaced_deployment("web", NS).metadata.generation)

    apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"tier": "front"}}})
    apps.patch_namespaced_deployment("web", NS, {"metadata": {"annotations": {"note": "x"}}})
    assert generation() == 1

    # Status through the main endpoint is ignored; through /status, it changes only the status.
    apps.patch_namespaced_deployment("web", NS, {"status": {"replicas": 42}})
    assert raw(apps.read_namespaced_deployment, "web", NS).get("status", {}).get("replicas") != 42
    apps.patch_namespaced_deployment_status("web", NS, {"status": {"replicas": 42}, "spec": {"replicas": 9}})
    assert generation() == 1
    assert apps.read_namespaced_deployment("web", NS).spec.replicas == 2

    apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 3}})
    assert generation() == 2
    apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 4}})
    assert generation() == 3


def test_status_subresource_of_a_crd(widgets_crd: dict[str, Any], custom: CustomObjectsApi) -> None:
    conditions = {c["type"]: c["status"] for c in widgets_crd["status"]["conditions"]}
    assert conditions == {"Established": "True", "NamesAccepted": "True"}

    body = {
        "apiVersion": "sandbox.sluice.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 1},
        "status": {"phase": "ignored-on-create"},
    }
    created = as_dict(custom.create_namespaced_custom_object(*WIDGETS[:2], NS, WIDGETS[2], body))
    assert "status" not in created
    assert created["metadata"]["generation"] == 1

    patched = as_dict(
        custom.patch_namespaced_custom_object_status(
            *WIDGETS[:2], NS, WIDGETS[2], "w1", {"status": {"phase": "Ready"}, "spec": {"size": 100}}
        )
    )
    assert patched["status"] == {"phase": "Ready"}
    assert patched["spec"] == {"size": 1}
    assert patched["metadata"]["generation"] == 1

    patched = as_dict(
        custom.patch_namespaced_custom_object(
            *WIDGETS[:2], NS, WIDGETS[2], "w1", {"status": {"phase": "Hacked"}, "spec": {"size": 2}}
        )
    )
    assert patched["status"] == {"phase": "Ready"}
    assert patched["metadata"]["generation"] == 2

    fetched = as_dict(custom.get_namespaced_custom_object_status(*WIDGETS[:2], NS, WIDGETS[2], "w1"))
    assert fetched["status"] == {"phase": "Ready"}


def test_httproute_crd_from_upstream(
    sandbox_api: SandboxThread, api_client: ApiClient, custom: CustomObjectsApi
) -> None:
    crd = upstream_crd(HTTPROUTES)
    sandbox_api.run(sandbox_api.server.install_crd(crd))

    discovery = kubernetes.client.ApisApi(api_client).get_api_versions()
    gateway = next(g for g in discovery.groups if g.name == GATEWAY)
    assert gateway.preferred_version.version == "v1"
    resources = custom.get_api_resources(GATEWAY, "v1").resources
    names = {r.name: r for r in resources}
    assert names["httproutes"].kind == "HTTPRoute" and names["httproutes"].namespaced
    assert "gateway-api" in (names["httproutes"].categories or [])
    assert "httproutes/status" in names

    route = {
        "apiVersion": f"{GATEWAY}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]},
    }
    custom.create_namespaced_custom_object(GATEWAY, "v1", NS, "httproutes", route)
    accepted = {
        "type": "Accepted",
        "status": "True",
        "reason": "Accepted",
        "message": "ok",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    status = {
        "status": {
            "parents": [
                {"parentRef": {"name": "gw"}, "controllerName": "example.com/gw", "conditions": [accepted]}
            ]
        }
    }
    custom.patch_namespaced_custom_object_status(GATEWAY, "v1", NS, "httproutes", "web", status)
    # All served versions share the objects (no conversion is needed between v1 and v1beta1).
    via_beta = as_dict(custom.get_namespaced_custom_object(GATEWAY, "v1beta1", NS, "httproutes", "web"))
    assert via_beta["apiVersion"] == f"{GATEWAY}/v1beta1"
    [parent] = via_beta["status"]["parents"]
    assert parent["conditions"] == [accepted]
    assert parent["parentRef"] == {"name": "gw", "group": GATEWAY, "kind": "Gateway"}  # the schema's defaults


# ----- Lists & selectors -----


def test_label_and_field_selectors_on_list(core: CoreV1Api) -> None:
    for name, labels in [
        ("a", {"app": "web", "tier": "front"}),
        ("b", {"app": "web", "tier": "back"}),
        ("c", {"app": "db"}),
    ]:
        core.create_namespaced_config_map(NS, {"metadata": {"name": name, "labels": labels}})

    def names(**kwargs: str) -> list[str]:
        return [str(cm.metadata.name) for cm in core.list_namespaced_config_map(NS, **kwargs).items]

    assert names(label_selector="app=web") == ["a", "b"]
    assert names(label_selector="app=web,tier!=front") == ["b"]
    assert names(label_selector="tier in (front, back)") == ["a", "b"]
    assert names(label_selector="tier notin (front)") == ["b", "c"]
    assert names(label_selector="!tier") == ["c"]
    assert names(label_selector="tier") == ["a", "b"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b", label_selector="app==web") == ["a"]
    assert [
        cm.metadata.name
        for cm in core.list_config_map_for_all_namespaces(
            field_selector=f"metadata.namespace={NS}", label_selector="app"
        ).items
    ] == ["a", "b", "c"]

    code, body = api_error(lambda: core.list_namespaced_config_map(NS, label_selector="app in (web"))
    assert (code, body["reason"]) == (400, "BadRequest")


# ----- Watches -----


def test_watch_from_a_list_resource_version(core: CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "before"}})
    listed = core.list_namespaced_config_map(NS)
    core.create_namespaced_config_map(NS, {"metadata": {"name": "after"}})
    core.patch_namespaced_config_map("before", NS, {"data": {"x": "1"}})

    events = []
    watch = kubernetes.watch.Watch()
    for event in watch.stream(
        core.list_namespaced_config_map,
        NS,
        timeout_seconds=5,
        resource_version=listed.metadata.resource_version,
    ):
        events.append((event["type"], event["object"].metadata.name))
        if len(events) == 2:
            watch.stop()
    assert events == [("ADDED", "after"), ("MODIFIED", "before")]


def test_watch_without_resource_version_starts_with_the_current_state(core: CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "existing", "labels": {"w": "yes"}}})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "unselected"}})
    seen = []
    watch = kubernetes.watch.Watch()
    for event in watch.stream(core.list_namespaced_config_map, NS, label_selector="w=yes", timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if event["type"] == "ADDED":
            # The object leaves the selection: the watcher sees it as DELETED.
            core.patch_namespaced_config_map("existing", NS, {"metadata": {"labels": {"w": "no"}}})
        else:
            watch.stop()
    assert seen == [("ADDED", "existing"), ("DELETED", "existing")]


def test_watch_ends_after_timeout_seconds(core: CoreV1Api) -> None:
    since = core.list_namespaced_config_map(NS).metadata.resource_version
    stream = kubernetes.watch.Watch().stream(
        core.list_namespaced_config_map, NS, timeout_seconds=1, resource_version=since
    )
    assert list(stream) == []  # and the stream has ended: the server closed it


# ----- Deletion -----


def test_delete_with_finalizers(sandbox_api: SandboxThread, core: CoreV1Api) -> None:
    core.create_namespaced_config_map(NS, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    core.delete_namespaced_config_map("held", NS)
    held = core.read_namespaced_config_map("held", NS)
    assert held.metadata.deletion_timestamp is not None

    core.patch_namespaced_config_map("held", NS, {"metadata": {"finalizers": None}})
    sandbox_api.wait_for_deletion("configmaps", NS, "held", timeout=5)
    code, _ = api_error(lambda: core.read_namespaced_config_map("held", NS))
    assert code == 404


def test_owner_references_are_garbage_collected(
    sandbox_api: SandboxThread, apps: AppsV1Api, core: CoreV1Api
) -> None:
    owner = apps.create_namespaced_deployment(NS, deployment("web"))
    owner_ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": owner.metadata.uid}
    child = core.create_namespaced_config_map(
        NS, {"metadata": {"name": "child", "ownerReferences": [owner_ref]}}
    )
    child_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "child", "uid": child.metadata.uid}
    core.create_namespaced_secret(NS, {"metadata": {"name": "grandchild", "ownerReferences": [child_ref]}})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "unrelated"}})

    apps.delete_namespaced_deployment("web", NS, propagation_policy="Background")
    sandbox_api.wait_for_deletion("configmaps", NS, "child", timeout=5)
    sandbox_api.wait_for_deletion("secrets", NS, "grandchild", timeout=5)
    assert [cm.metadata.name for cm in core.list_namespaced_config_map(NS).items] == ["unrelated"]


def test_pods_are_deleted_gracefully(sandbox_api: SandboxThread, core: CoreV1Api) -> None:
    held = {
        "metadata": {"name": "held", "finalizers": ["sandbox.sluice.dev/test"]},
        "spec": {"containers": []},
    }
    core.create_namespaced_pod(NS, held)
    marked = raw(core.delete_namespaced_pod, "held", NS)  # a pending deletion returns the pod
    assert marked["kind"] == "Pod" and marked["metadata"]["deletionGracePeriodSeconds"] == 30
    assert core.read_namespaced_pod("held", NS).metadata.deletion_timestamp is not None
    stopped = raw(core.delete_namespaced_pod, "held", NS, grace_period_seconds=0)  # in the query
    assert stopped["metadata"]["deletionGracePeriodSeconds"] == 0  # held by its finalizer only
    core.patch_namespaced_pod("held", NS, {"metadata": {"finalizers": None}})
    assert api_error(lambda: core.read_namespaced_pod("held", NS))[0] == 404

    core.create_namespaced_pod(NS, {"metadata": {"name": "forced"}, "spec": {"containers": []}})
    forced = raw(core.delete_namespaced_pod, "forced", NS, body={"gracePeriodSeconds": 0})  # in the body
    assert (forced["kind"], forced["status"]) == ("Status", "Success")
    assert api_error(lambda: core.read_namespaced_pod("forced", NS))[0] == 404

    url = f"{sandbox_api.url}/api/v1/namespaces/{NS}/pods/any?gracePeriodSeconds=soon"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10)
    assert refused.value.code == 400


def test_a_deployments_pods_terminate_with_it(
    sandbox_api: SandboxThread, apps: AppsV1Api, core: CoreV1Api
) -> None:
    apps.create_namespaced_deployment(NS, deployment("web", replicas=2))
    sandbox_api.wait_for("deployments", NS, "web", lambda d: d.get("status", {}).get("readyReplicas") == 2)
    listed = raw(core.list_namespaced_pod, NS, label_selector="app=web")
    assert len(listed["items"]) == 2

    async def follow() -> dict[str, list[tuple[str, bool]]]:
        """Each pod's events from the list on, (type, terminating), until both are gone."""
        seen: dict[str, list[tuple[str, bool]]] = {}
        since = listed["metadata"]["resourceVersion"]
        async with asyncio.timeout(10):
            async with sandbox_api.store.watch(
                "pods", NS, resource_version=since, label_selector="app=web"
            ) as w:
                async for event in w:
                    meta = event["object"]["metadata"]
                    seen.setdefault(meta["name"], []).append((event["type"], "deletionTimestamp" in meta))
                    if sum(events[-1][0] == "DELETED" for events in seen.values()) == 2:
                        return seen
        raise AssertionError("the watch ended")

    apps.delete_namespaced_deployment("web", NS)
    # The simulated kubelet removes them once their containers have stopped.
    for events in sandbox_api.run(follow(), timeout=15).values():
        assert events[-2:] == [("MODIFIED", True), ("DELETED", True)]  # terminating first, then gone


# ----- The workload simulator -----


def test_simulator_marks_a_deployment_ready(sandbox_api: SandboxThread, apps: AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment("web", replicas=3))
    ready = sandbox_api.wait_for(
        "deployments", NS, "web", lambda d: d.get("status", {}).get("readyReplicas") == 3
    )
    status = ready["status"]
    assert status["observedGeneration"] == 1
    assert status["replicas"] == status["updatedReplicas"] == status["availableReplicas"] == 3
    assert "unavailableReplicas" not in status
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["Available"] == ("True", "MinimumReplicasAvailable")
    assert conditions["Progressing"] == ("True", "NewReplicaSetAvailable")

    apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 0}})
    scaled = sandbox_api.wait_for("deployments", NS, "web", lambda d: d["status"]["observedGeneration"] == 2)
    assert scaled["status"]["readyReplicas"] == scaled["status"]["replicas"] == 0


def test_simulator_never_readies_an_annotated_deployment(sandbox_api: SandboxThread, apps: AppsV1Api) -> None:
    apps.create_namespaced_deployment(
        NS, deployment("stuck", replicas=2, template_annotations={"sandbox.sluice.dev/ready": "false"})
    )
    observed = sandbox_api.wait_for(
        "deployments", NS, "stuck", lambda d: d.get("status", {}).get("observedGeneration") == 1
    )
    status = observed["status"]
    assert (status["replicas"], status["readyReplicas"], status["availableReplicas"]) == (2, 0, 0)
    assert status["unavailableReplicas"] == 2
    # The simulator settles each generation once: nothing will make these pods ready later.
    assert {c["type"]: c["status"] for c in status["conditions"]}["Available"] == "False"


# ----- A real kopf operator -----

OPERATOR = """
    import kopf

    @kopf.on.login()
    def login(**kwargs):
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.create('sandbox.sluice.dev', 'v1', 'widgets')
    def greet(spec, body, patch, **_):
        patch.status['observedSize'] = spec.get('size')
        kopf.info(body, reason='Greeting', message='hello from kopf')
        return {'message': 'hello'}

    @kopf.on.delete('sandbox.sluice.dev', 'v1', 'widgets')
    def farewell(**_):
        pass
"""


def test_kopf_operator_runs_clean(
    sandbox_api: SandboxThread,
    kubeconfig: pathlib.Path,
    widgets_crd: dict[str, Any],
    custom: CustomObjectsApi,
    tmp_path: pathlib.Path,
) -> None:
    # The `kubeconfig` fixture exports KUBECONFIG, which kopf's login handler reads.
    operator = tmp_path / "operator.py"
    operator.write_text(textwrap.dedent(OPERATOR))
    args = ["run", "--standalone", "-A", "--verbose", str(operator)]
    with kopf.testing.KopfRunner(args, timeout=30) as runner:
        body = {
            "apiVersion": "sandbox.sluice.dev/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        }
        custom.create_namespaced_custom_object(*WIDGETS[:2], NS, WIDGETS[2], body)
        handled = sandbox_api.wait_for("widgets", NS, "w1", lambda w: "greet" in w.get("status", {}))
        assert handled["status"] == {"observedSize": 3, "greet": {"message": "hello"}}
        assert handled["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
        sandbox_api.wait_for("events", NS, None, lambda e: e.get("reason") == "Greeting")

        custom.delete_namespaced_custom_object(*WIDGETS[:2], NS, WIDGETS[2], "w1")
        sandbox_api.wait_for_deletion("widgets", NS, "w1")

    assert runner.exit_code == 0
    assert runner.exception is None
    problems = [
        line
        for line in runner.output.splitlines()
        if any(marker in line for marker in ("[ERROR", "[WARNING", "Traceback", "APIError"))
        and "OS signals are ignored" not in line
    ]  # KopfRunner runs kopf in a thread
    assert problems == []


# ----- Discovery, patch flavours, and the less common paths -----


def test_discovery(api_client: ApiClient, core: CoreV1Api) -> None:
    core_resources = {r.name: r for r in core.get_api_resources().resources}
    assert core_resources["pods"].short_names == ["po"] and core_resources["pods"].categories == ["all"]
    assert core_resources["pods"].singular_name == "pod" and core_resources["pods"].namespaced
    assert core_resources["namespaces"].namespaced is False
    assert "deletecollection" not in core_resources["namespaces"].verbs
    assert set(core_resources["pods/status"].verbs) == {"get", "patch", "update"}

    apps = {r.name: r for r in AppsV1Api(api_client).get_api_resources().resources}
    assert apps["deployments"].kind == "Deployment" and apps["deployments"].short_names == ["deploy"]
    assert apps["deployments/scale"].kind == "Scale" and apps["deployments/scale"].group == "autoscaling"
    groups = {g.name for g in kubernetes.client.ApisApi(api_client).get_api_versions().groups}
    assert {
        "apps",
        "events.k8s.io",
        "coordination.k8s.io",
        "apiextensions.k8s.io",
        "admissionregistration.k8s.io",
    } <= groups

    namespace = core.read_namespace_status("default")
    assert namespace.status.phase == "Active"
    assert namespace.metadata.labels == {"kubernetes.io/metadata.name": "default"}


def test_patch_flavours(apps: AppsV1Api, widgets_crd: dict[str, Any], custom: CustomObjectsApi) -> None:
    body = deployment("web")
    body["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy:1"})
    apps.create_namespaced_deployment(NS, body)

    # The kubernetes client sends dicts to built-ins as strategic merge patches: merged by name.
    patched = apps.patch_namespaced_deployment(
        "web", NS, {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.28"}]}}}}
    )
    assert [(c.name, c.image) for c in patched.spec.template.spec.containers] == [
        ("app", "nginx:1.28"),
        ("sidecar", "envoy:1"),
    ]

    stale = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "replace", "path": "/spec/replicas", "value": 9},
    ]
    code, body = api_error(lambda: apps.patch_namespaced_deployment("web", NS, stale))
    assert code == 422

    custom.create_namespaced_custom_object(*WIDGETS[:2], NS, WIDGETS[2], {"metadata": {"name": "w1"}})
    for content_type in ["application/strategic-merge-patch+json"]:  # custom resources: none
        code, body = api_error(
            lambda ct=content_type: custom.patch_namespaced_custom_object(  # type: ignore[misc]
                *WIDGETS[:2], NS, WIDGETS[2], "w1", {"spec": {}}, _content_type=ct
            )
        )
        assert (code, body["reason"]) == (415, "UnsupportedMediaType")


def test_dry_run_changes_nothing(core: CoreV1Api) -> None:
    created = core.create_namespaced_config_map(NS, {"metadata": {"name": "dry"}}, dry_run="All")
    assert created.metadata.uid
    assert core.list_namespaced_config_map(NS).items == []


def test_scale_subresource(apps: AppsV1Api) -> None:
    apps.create_namespaced_deployment(NS, deployment("web", replicas=2))
    scale = apps.read_namespaced_deployment_scale("web", NS)
    assert (scale.spec.replicas, scale.status.selector) == (2, "app=web")
    scale.spec.replicas = 5
    apps.replace_namespaced_deployment_scale("web", NS, scale)
    assert apps.read_namespaced_deployment("web", NS).spec.replicas == 5


def test_watch_from_a_forgotten_resource_version_is_410() -> None:
    def small_history() -> SandboxAPIServer:
        return SandboxAPIServer(history=2)

    with SandboxThread(server_factory=small_history) as sandbox:
        for name in "abc":
            sandbox.run(sandbox.store.create("configmaps", {"metadata": {"name": name}}, NS))
        url = f"{sandbox.url}/api/v1/namespaces/{NS}/configmaps?watch=1&resourceVersion=1&timeoutSeconds=5"
        with urllib.request.urlopen(url, timeout=10) as response:
            event = json.loads(response.readline())
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")


def test_faults_injected_through_kmock(sandbox_api: SandboxThread, core: CoreV1Api) -> None:
    async def inject() -> None:  # on the server's loop: kmock's reactions are not thread-safe
        reaction = sandbox_api.server.emulator["list", kmock.resource("", "v1", "configmaps")][:1]
        reaction << 503 << {"kind": "Status", "apiVersion": "v1", "code": 503, "reason": "ServiceUnavailable"}

    sandbox_api.run(inject())
    code, body = api_error(lambda: core.list_namespaced_config_map(NS))
    assert (code, body["reason"]) == (503, "ServiceUnavailable")
    assert core.list_namespaced_config_map(NS).kind == "ConfigMapList"  # the fault was one-off
    assert core.create_namespaced_config_map(NS, {"metadata": {"name": "x"}}).metadata.name == "x"


def test_orphaning_and_multiple_owners(apps: AppsV1Api, core: CoreV1Api) -> None:
    refs = []
    for name in ["one", "two"]:
        owner = apps.create_namespaced_deployment(NS, deployment(name))
        refs.append({"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": owner.metadata.uid})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "shared", "ownerReferences": refs}})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "orphan", "ownerReferences": refs[1:]}})

    apps.delete_namespaced_deployment("one", NS)  # `shared` has a live owner left: it only loses a reference
    shared = core.read_namespaced_config_map("shared", NS)
    assert [r.name for r in shared.metadata.owner_references] == ["two"]

    apps.delete_namespaced_deployment("two", NS, propagation_policy="Orphan")
    assert core.read_namespaced_config_map("shared", NS).metadata.owner_references is None
    assert core.read_namespaced_config_map("orphan", NS).metadata.owner_references is None


def test_namespace_deletion_takes_its_objects(sandbox_api: SandboxThread, core: CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "doomed"}})
    core.create_namespaced_config_map("doomed", {"metadata": {"name": "inside"}})
    core.create_namespaced_config_map(NS, {"metadata": {"name": "outside"}})
    core.delete_namespace("doomed")
    sandbox_api.wait_for_deletion("configmaps", "doomed", "inside")
    assert [cm.metadata.name for cm in core.list_config_map_for_all_namespaces().items] == ["outside"]


def test_crd_deletion_removes_its_objects(
    sandbox_api: SandboxThread, api_client: ApiClient, widgets_crd: dict[str, Any], custom: CustomObjectsApi
) -> None:
    custom.create_namespaced_custom_object(*WIDGETS[:2], NS, WIDGETS[2], {"metadata": {"name": "w1"}})
    kubernetes.client.ApiextensionsV1Api(api_client).delete_custom_resource_definition(
        WIDGET_CRD["metadata"]["name"]
    )
    assert sandbox_api.store.lookup(*WIDGETS) is None  # no longer served …
    code, _ = api_error(lambda: custom.list_namespaced_custom_object(*WIDGETS[:2], NS, WIDGETS[2]))
    assert code == 404
    sandbox_api.run(sandbox_api.server.install_crd(WIDGET_CRD))  # … and re-creating it brings nothing back
    assert as_dict(custom.list_namespaced_custom_object(*WIDGETS[:2], NS, WIDGETS[2]))["items"] == []


# ----- What kubectl relies on, over plain HTTP (test_sandbox_kubectl.py runs kubectl itself) -----

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def http(
    sandbox: SandboxThread, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, Any]:
    """(status, parsed body, response headers) of a raw request, errors included."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{sandbox.url}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def test_tables_for_custom_and_builtin_resources(
    sandbox_api: SandboxThread, apps: AppsV1Api, widgets_crd: dict[str, Any]
) -> None:
    apps.create_namespaced_deployment(NS, deployment("web", replicas=3))
    code, table, _ = http(
        sandbox_api, "GET", f"/apis/apps/v1/namespaces/{NS}/deployments", headers={"Accept": TABLE}
    )
    assert (code, table["kind"], table["apiVersion"]) == (200, "Table", "meta.k8s.io/v1")
    assert [column["name"] for column in table["columnDefinitions"]][:5] == [
        "Name",
        "Ready",
        "Up-to-date",
        "Available",
        "Age",
    ]
    [row] = table["rows"]
    assert row["cells"][0] == "web" and row["object"]["kind"] == "PartialObjectMetadata"

    custom_path = f"/apis/sandbox.sluice.dev/v1/namespaces/{NS}/widgets"
    http(sandbox_api, "POST", custom_path, {"metadata": {"name": "w1"}})
    code, table, _ = http(sandbox_api, "GET", f"{custom_path}/w1", headers={"Accept": TABLE})
    assert [column["name"] for column in table["columnDefinitions"]] == ["Name", "Age"]
    assert table["rows"][0]["cells"][0] == "w1"
    code, plain, _ = http(sandbox_api, "GET", f"{custom_path}/w1")  # without asking: the object
    assert plain["kind"] == "Widget"


def test_unknown_fields_are_pruned_with_a_warning_or_refused(sandbox_api: SandboxThread) -> None:
    repo = pathlib.Path(__file__).parents[2]
    crd = yaml.safe_load((repo / "crds" / "rollout.yaml").read_text())
    sandbox_api.run(sandbox_api.server.install_crd(crd))
    rollout = yaml.safe_load((repo / "examples" / "rollout-minimal.yaml").read_text())
    rollout["spec"]["bogus"] = 1
    path = f"/apis/sluice.dev/v1alpha1/namespaces/{NS}/rollouts"

    code, body, _ = http(sandbox_api, "POST", f"{path}?fieldValidation=Strict", rollout)
    assert (code, body["reason"]) == (400, "BadRequest")
    assert body["message"].endswith('strict decoding error: unknown field "spec.bogus"')

    code, body, headers = http(sandbox_api, "POST", path, rollout)  # the default: Warn
    assert code == 201 and "bogus" not in body["spec"]
    assert headers.get_all("Warning") == ['299 - "unknown field \\"spec.bogus\\""']
    assert body["spec"]["progressDeadlineSeconds"] == 600  # defaulted from the schema

    code, body, _ = http(
        sandbox_api,
        "PATCH",
        f"{path}/web",
        {"spec": {"replicas": "many"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert (code, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueTypeInvalid",
            "field": "spec.replicas",
            "message": 'Invalid value: "string": spec.replicas in body must be of type integer: "string"',
        },
        {  # a wrong type keeps the CRD's CEL rules from running, and the API server says so
            "reason": "FieldValueInvalid",
            "field": "<nil>",
            "message": 'Invalid value: "null": some validation rules were not checked because the object '
            "was invalid; correct the existing errors to complete validation",
        },
    ]


def test_openapi_documents(sandbox_api: SandboxThread, widgets_crd: dict[str, Any]) -> None:
    code, index, _ = http(sandbox_api, "GET", "/openapi/v3")
    assert code == 200 and {"api/v1", "apis/apps/v1", "apis/sandbox.sluice.dev/v1"} <= set(index["paths"])
    url = index["paths"]["apis/sandbox.sluice.dev/v1"]["serverRelativeURL"]
    code, document, _ = http(sandbox_api, "GET", url)
    assert code == 200 and "dev.sluice.sandbox.v1.Widget" in document["components"]["schemas"]
    code, _, _ = http(sandbox_api, "GET", "/openapi/v3/apis/nothing/v1")
    assert code == 404
