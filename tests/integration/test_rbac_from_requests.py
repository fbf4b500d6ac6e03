"""RBAC derived from what the operator does: manifests/rbac.yaml grants exactly the requests it makes.

The real operator (kopf and all, leader election on, the SidecarSet webhook served) runs against the
sandbox API server, which records every request. The test drives, all at once, what the operator
does in practice: a release promoted by analysis against a real Prometheus, one rolled back by it, one
whose metric's credentials are read from a Secret, a release past the revision history limit (the
oldest records pruned) and that Rollout's deletion, an Application rendering Rollouts (one component
changed, one removed), a SidecarSet whose sidecar a pod gets from the webhook and then a new image of
in place, and a release gated by a job metric.

Every request with the operator's User-Agent (its own clients', kopf's, the Lease's) becomes the
attributes kube-apiserver's authorizer sees (sluice_sandbox.authz). The rules the manifests bind to
the operator's ServiceAccount must allow each of them (none missing), and each verb they grant must
have been used (none unused). One kind of request no run can pin is added to what is needed: a
``get`` of each kind the operator's cache holds, which the cache asks the API server for only on a
miss before the kind's watch has listed it (at start, after a watch error), whenever that happens.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from operators.api.refs import RolloutRef
from operators.application.reconciler import application_key
from operators.foundation.keys import ObjectKey, plural_of
from operators.foundation.leadership import LeaseSettings
from operators.operator import USER_AGENT, OperatorOptions, watched_kinds
from operators.rollout.inventory import rollout_key
from operators.rollout.ownership import ROLLOUT_LABEL
from operators.rollout.revisions import HISTORY_LIMIT, revision_record
from operators.webhook.server import CONFIGURATIONS_PATH, DEFAULT_CONFIGURATION, WebhookOptions
from sluice_sandbox.apiserver import SandboxThread
from sluice_sandbox.authz import (
    DISCOVERY,
    Attributes,
    Grant,
    Permission,
    denied,
    record_attributes,
    service_account_grants,
    unused,
)
from sluice_sandbox.exporter import MetricsExporter
from sluice_sandbox.prometheus import PrometheusServer, free_port
from tests import scenarios
from tests.harness import Harness, httproute_crd, running_operator, sluice_crds, status_of, virtualservice_crd
from tests.integration.test_sidecarset_operator import (
    AGENT,
    agent_image,
    batch_pod,
    patched_by_webhook,
    sidecarset,
    webhook_configuration,
)
from tests.integration.test_sidecarset_operator import Scene as WebhookScene

pytestmark = pytest.mark.integration

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
# The test's own client, told apart from the operator's by its User-Agent.
TEST_AGENT = "sluice-rbac-test/1"
# Where a cache miss may happen: in any namespace (which only a ClusterRole can grant).
ANY_NAMESPACE = "(any namespace)"
TIMEOUT = scenarios.RELEASE_TIMEOUT
SIDECAR_V1, SIDECAR_V2 = "fluent-bit:3.1", "fluent-bit:3.2"


def install_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def operator_account(docs: list[dict[str, Any]]) -> tuple[str, str]:
    """The operator Deployment's namespace and ServiceAccount: whom the bindings must grant."""
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    return deployment["metadata"]["namespace"], deployment["spec"]["template"]["spec"]["serviceAccountName"]


def harness_of(kubeconfig: Path) -> Harness:
    """A harness whose requests say they are the test's, not the operator's."""
    harness = Harness(kubeconfig)
    harness.cluster.api.user_agent = TEST_AGENT
    return harness


def cache_misses() -> list[Attributes]:
    """A read of each kind the operator's cache holds, as the cache makes one on a miss."""
    return [
        Attributes(
            verb="get",
            resource_request=True,
            api_group=watched.api_version.rpartition("/")[0],
            resource=plural_of(watched.kind),
            namespace="" if watched.cluster_scoped else ANY_NAMESPACE,
        )
        for watched in watched_kinds()
    ]


# ---- what the operator is driven through (each in a namespace of its own, all at once) -------------


def history_pruned_then_deleted(scene: scenarios.Scene) -> None:
    """A release past HISTORY_LIMIT revision records prunes the oldest; then the Rollout is deleted."""
    h, ns = scene.harness, scene.namespace
    first = scenarios.deploy_stable(scene, scenarios.web_rollout(name="history", steps=[{"setWeight": 100}]))
    live = h.rollout(ns, "history")
    ref = RolloutRef("history", ns, live["metadata"]["uid"])
    # Records as earlier releases would have left them, older than the operator's: the next is one too many.
    for number in range(HISTORY_LIMIT):
        h.cluster.create(revision_record(ref, f"old{number}", live["spec"]["template"], number + 1))
    h.set_image(ns, "history", scene.images[1])
    h.wait_rollout(ns, "history", lambda r: scenarios.promoted(status_of(r), first), TIMEOUT, "the release")
    h.wait(
        lambda: h.cluster.list_objects("apps/v1", "ControllerRevision", ns, f"{ROLLOUT_LABEL}=history"),
        lambda records: len(records) <= HISTORY_LIMIT,
        TIMEOUT,
        "the oldest revision records to be pruned",
    )
    h.cluster.delete(rollout_key(ns, "history"))
    h.wait(lambda: h.get(rollout_key(ns, "history")), lambda body: body is None, TIMEOUT, "the deletion")


def application_changed_and_shrunk(scene: scenarios.Scene) -> None:
    """An Application renders two Rollouts; then a commit changes one component and removes the other."""
    h, ns = scene.harness, scene.namespace
    h.ensure_namespace(ns)
    rollout = {"steps": [{"setWeight": 100}], "abortScaleDownDelaySeconds": 0, "progressDeadlineSeconds": 60}
    api, jobs = (
        {"name": name, "type": "worker", "image": scene.images[0], "replicas": 1} for name in ("api", "jobs")
    )
    h.apply_application(
        ns, {"metadata": {"name": "shop"}, "spec": {"rollout": rollout, "components": [api, jobs]}}
    )

    def running(app: dict[str, Any]) -> bool:
        status = status_of(app)
        return (
            status.get("observedGeneration") == app["metadata"]["generation"]
            and status.get("phase") == "Running"
        )

    h.wait_object(application_key(ns, "shop"), running, TIMEOUT, "the Application to run")
    h.patch_application(ns, "shop", {"spec": {"components": [{**api, "image": scene.images[1]}]}})

    def rewritten(rollouts: tuple[dict[str, Any] | None, dict[str, Any] | None]) -> bool:
        changed, removed = rollouts
        image = changed and changed["spec"]["template"]["spec"]["containers"][0]["image"]
        return removed is None and image == scene.images[1]

    h.wait(
        lambda: (h.get(rollout_key(ns, "api")), h.get(rollout_key(ns, "jobs"))),
        rewritten,
        TIMEOUT,
        "the changed component's Rollout rewritten and the removed one's gone",
    )
    h.wait_object(application_key(ns, "shop"), running, TIMEOUT, "the Application to run again")


def metric_secret_read(scene: scenarios.Scene) -> None:
    """A release whose metric names a bearer token Secret: the operator reads it (Prometheus ignores it)."""
    h, ns = scene.harness, scene.namespace
    h.ensure_namespace(ns)
    token = base64.b64encode(b"token").decode()
    h.cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "prom", "namespace": ns},
            "data": {"t": token},
        }
    )
    auth = {"bearerTokenSecretRef": {"name": "prom", "key": "t"}}
    metric = {
        "name": "zero",
        "query": "vector(0)",
        "prometheus": {"address": scene.prometheus_url, "timeout": "2s", "auth": auth},
        "thresholdRange": {"max": 1},
    }
    analysis = {"interval": "2s", "metrics": [metric]}
    first = scenarios.deploy_stable(
        scene, scenarios.web_rollout(steps=[{"setWeight": 100}], analysis=analysis)
    )
    h.set_image(ns, "web", scene.images[1])
    h.wait_rollout(
        ns, "web", lambda r: scenarios.promoted(status_of(r), first), TIMEOUT, "the release to be promoted"
    )


def sidecar_injected_then_upgraded_in_place(
    scene: scenarios.Scene, sandbox: SandboxThread, webhook_port: int
) -> None:
    """A pod outside Sluice gets its sidecar from the webhook, then the sidecar's new image in place."""
    h, ns = scene.harness, scene.namespace
    h.ensure_namespace(ns)
    name = "batch-agent"
    body = sidecarset(name, SIDECAR_V1, tier="batch", updateStrategy={"maxUnavailable": 1})
    generation = h.apply_sidecarset(body)["metadata"]["generation"]
    h.wait(  # the webhook injects what the operator's cache holds: wait until it holds this
        lambda: status_of(h.sidecarset(name)),
        lambda status: status.get("observedGeneration") == generation,
        TIMEOUT,
        "the operator to see the SidecarSet",
    )
    configuration = h.wait(
        lambda: h.cluster.request("GET", f"{CONFIGURATIONS_PATH}/{DEFAULT_CONFIGURATION}"),
        lambda found: bool(found["webhooks"][0]["clientConfig"].get("caBundle")),
        TIMEOUT,
        "the operator to publish its CA bundle",
    )
    ca = base64.b64decode(configuration["webhooks"][0]["clientConfig"]["caBundle"])
    webhook = WebhookScene(
        sandbox=sandbox,
        harness=h,
        namespace=ns,
        prometheus_url=scene.prometheus_url,
        webhook_port=webhook_port,
    )
    pod = patched_by_webhook(webhook, ca, batch_pod("job-0", ns), ns)
    assert pod is not None and agent_image(pod) == SIDECAR_V1, "the webhook injected the sidecar"
    h.cluster.create(pod)  # the sandbox's kubelet runs it
    h.wait(
        lambda: status_of(h.sidecarset(name)),
        lambda status: (status.get("matchedPods"), status.get("readyPods")) == (1, 1),
        TIMEOUT,
        "the SidecarSet to count the pod ready",
    )
    h.patch_sidecarset(name, {"spec": {"containers": [{"name": AGENT, "image": SIDECAR_V2}]}})
    pod_key = ObjectKey("v1", "Pod", ns, "job-0")
    h.wait_object(pod_key, lambda live: agent_image(live) == SIDECAR_V2, TIMEOUT, "the in-place upgrade")


# ---- the comparison ---------------------------------------------------------------------------------


def missing_lines(refused: Iterable[Attributes], grants: list[Grant], cluster_role: str) -> list[str]:
    """One line per verb, resource and scope refused: an example request, and the rule to add where."""
    alike: dict[tuple[str, str, str, bool, bool], list[Attributes]] = defaultdict(list)
    for request in refused:
        scope = (request.verb, request.api_group, request.combined_resource or request.path)
        alike[(*scope, request.resource_request, bool(request.namespace))].append(request)
    lines = []
    for (verb, group, resource, resource_request, _), requests in sorted(alike.items()):
        example = requests[0]
        if resource_request:
            rule = f"{{apiGroups: [{group!r}], resources: [{resource}], verbs: [{verb}]}}"
        else:
            rule = f"{{nonResourceURLs: [{resource}], verbs: [{verb}]}}"
        # The operator's own namespace has a Role of its own (the Lease's): a rule for it goes there.
        role = next(
            (g.role for g in grants if g.namespace is not None and g.namespace == example.namespace),
            cluster_role,
        )
        lines.append(f"  {example.describe()} ({len(requests)} like it): add {rule} to {role}")
    return lines


def unused_lines(permissions: Iterable[Permission]) -> list[str]:
    return [f"  {permission.describe()}: remove it" for permission in permissions]


def test_rbac_grants_exactly_what_the_operator_does(
    sandbox_api: SandboxThread,
    metrics_exporter: MetricsExporter,
    prometheus: PrometheusServer,
    metrics_namespace: str,
) -> None:
    docs = install_documents()
    operator_namespace, service_account = operator_account(docs)
    kubeconfig = sandbox_api.kubeconfig
    for crd in [*sluice_crds(), httproute_crd(), virtualservice_crd()]:
        sandbox_api.run(sandbox_api.server.install_crd(crd))
    setup = harness_of(kubeconfig)
    setup.cluster.request("POST", CONFIGURATIONS_PATH, webhook_configuration())
    setup.ensure_namespace(operator_namespace)
    webhook_port = free_port()
    options = OperatorOptions(
        all_namespaces=True,
        prometheus_url=prometheus.url,
        kubeconfig=str(kubeconfig),
        liveness_endpoint=None,
        webhook=WebhookOptions(port=webhook_port, addr="127.0.0.1", hostnames=("127.0.0.1",)),
        # In the namespace the Lease's Role is bound in, as the Deployment's POD_NAMESPACE says.
        leader_election=LeaseSettings(namespace=operator_namespace),
        identity="rbac-test",
    )
    prefix = metrics_namespace[:50].rstrip("-")

    def scene(suffix: str, traffic: scenarios.TrafficUnderTest = scenarios.GATEWAY_API) -> scenarios.Scene:
        return scenarios.Scene(
            harness=harness_of(kubeconfig),
            namespace=f"{prefix}-{suffix}",
            exporter=metrics_exporter,
            prometheus_url=prometheus.url,
            restart_operator=lambda: None,
            traffic=traffic,
        )

    promoted, rolled_back, history, app, pods, secret, jobs = (
        scene(suffix) for suffix in ("promoted", "rolled-back", "history", "app", "pods", "secret", "jobs")
    )
    # The second traffic provider's kind: its VirtualService watched, read and applied.
    istio = scene("istio", scenarios.ISTIO)
    drives: list[Callable[[], None]] = [
        lambda: scenarios.healthy_release_is_promoted(promoted),
        lambda: scenarios.failing_metric_rolls_back(rolled_back),
        lambda: history_pruned_then_deleted(history),
        lambda: application_changed_and_shrunk(app),
        lambda: sidecar_injected_then_upgraded_in_place(pods, sandbox_api, webhook_port),
        lambda: metric_secret_read(secret),
        lambda: scenarios.deploy_stable(istio, scenarios.web_rollout(traffic=scenarios.ISTIO)),
        # A job metric's Job: created, listed while it runs, deleted once judged.
        lambda: scenarios.job_metric_gates_release(jobs, exit_code=0),
    ]
    log = sandbox_api.requests
    log.clear()
    with running_operator(options), ThreadPoolExecutor(len(drives)) as pool:
        for drive in [pool.submit(drive) for drive in drives]:
            drive.result()
    # The operator has stopped (and released its Lease): every request it made is in the log.
    assert log.dropped == 0, "the request log dropped records: raise its limit"
    records = log.snapshot()
    strangers = {r.user_agent for r in records if not r.user_agent.startswith((USER_AGENT, TEST_AGENT))}
    assert not strangers, f"requests by a client that is neither the operator nor the test: {strangers}"
    requests = [record_attributes(r) for r in records if r.user_agent.startswith(USER_AGENT)]
    needed = [*requests, *cache_misses()]

    grants = service_account_grants(docs, operator_namespace, service_account)
    refused = denied(needed, [*grants, DISCOVERY])
    idle = unused(grants, needed)
    (cluster_role,) = {g.role for g in grants if g.namespace is None}
    report = [f"manifests/rbac.yaml is not what the operator does ({len(requests)} requests recorded)."]
    if refused:
        report += ["Missing, the API server would refuse:", *missing_lines(refused, grants, cluster_role)]
    if idle:
        report += ["Unused, granted but never asked for:", *unused_lines(idle)]
    assert not refused and not idle, "\n".join(report)
