"""
The built-in resources the sandbox serves, with the few defaults of the API server that
operators and kubectl read back (the rest of a built-in object is stored as written), the
graceful deletion of pods, and Leases typed and validated as leader election needs them
(see :mod:`sluice_sandbox.leases`).
"""

from sluice_sandbox.errors import ApiError, FieldError
from sluice_sandbox.leases import prepare_lease
from sluice_sandbox.resources import ALL_VERBS, Admission, JsonObject, ResourceSpec, ScaleSpec


def _default_namespace(spec: ResourceSpec, namespace: JsonObject, admission: Admission) -> None:
    name = namespace["metadata"]["name"]
    namespace["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    namespace.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    namespace.setdefault("status", {}).setdefault("phase", "Active")


DEFAULT_TERMINATION_GRACE_PERIOD = 30  # seconds: the API server's default for pods


def pod_grace_period(pod: JsonObject, requested: int | None) -> int:
    """
    The grace period of a pod's deletion, as the API server's pod strategy decides it: the
    request's ``gracePeriodSeconds``, else the pod's ``spec.terminationGracePeriodSeconds``, else
    30 s; 0 (removed at once) for a pod whose containers have all ended (Succeeded or Failed).
    See https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination
    """
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    if requested is not None:
        return requested
    own = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    if isinstance(own, int) and not isinstance(own, bool) and own >= 0:
        return own
    return DEFAULT_TERMINATION_GRACE_PERIOD


def _default_replicas(spec: ResourceSpec, workload: JsonObject, admission: Admission) -> None:
    workload.setdefault("spec", {}).setdefault("replicas", 1)


def _default_deployment(spec: ResourceSpec, deployment: JsonObject, admission: Admission) -> None:
    # Only the top-level defaults of apps/v1 Deployments: the pod template is left untouched,
    # so that operators comparing templates see exactly what they wrote.
    _default_replicas(spec, deployment, admission)
    deployment_spec = deployment["spec"]
    deployment_spec.setdefault("revisionHistoryLimit", 10)
    deployment_spec.setdefault("progressDeadlineSeconds", 600)
    strategy = deployment_spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        strategy.setdefault("rollingUpdate", {}).update(
            {key: strategy.get("rollingUpdate", {}).get(key, "25%") for key in ("maxSurge", "maxUnavailable")}
        )


DEFAULT_BACKOFF_LIMIT = 6  # the API server's default for Jobs


def prepare_job(spec: ResourceSpec, job: JsonObject, admission: Admission) -> None:
    """The defaults of batch/v1 Jobs, and a pod template that can run to completion."""
    job_spec = job.setdefault("spec", {})
    job_spec.setdefault("backoffLimit", DEFAULT_BACKOFF_LIMIT)
    job_spec.setdefault("completions", 1)
    job_spec.setdefault("parallelism", 1)
    job_spec.setdefault("completionMode", "NonIndexed")
    job_spec.setdefault("suspend", False)
    policy = ((job_spec.get("template") or {}).get("spec") or {}).get("restartPolicy")
    if policy not in ("Never", "OnFailure"):
        error = (
            FieldError.required("spec.template.spec.restartPolicy", 'valid values: "OnFailure", "Never"')
            if policy is None
            else FieldError.not_supported("spec.template.spec.restartPolicy", policy, ["OnFailure", "Never"])
        )
        raise ApiError.invalid(spec, job.get("metadata", {}).get("name"), [error])


_NAMESPACE_VERBS = tuple(verb for verb in ALL_VERBS if verb != "deletecollection")
_WORKLOAD_SCALE = ScaleSpec(label_selector_path=".spec.selector")

BUILTIN_RESOURCES: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        "",
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        short_names=("ns",),
        verbs=_NAMESPACE_VERBS,
        status=True,
        prepare=_default_namespace,
    ),
    ResourceSpec(
        "",
        "v1",
        "pods",
        "Pod",
        short_names=("po",),
        categories=("all",),
        status=True,
        grace_period=pod_grace_period,
    ),
    ResourceSpec("", "v1", "services", "Service", short_names=("svc",), categories=("all",), status=True),
    ResourceSpec("", "v1", "endpoints", "Endpoints", short_names=("ep",)),
    ResourceSpec("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    ResourceSpec("", "v1", "secrets", "Secret"),
    ResourceSpec("", "v1", "events", "Event", short_names=("ev",)),
    ResourceSpec("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",)),
    ResourceSpec(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        short_names=("deploy",),
        categories=("all",),
        status=True,
        scale=_WORKLOAD_SCALE,
        prepare=_default_deployment,
    ),
    ResourceSpec(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        short_names=("rs",),
        categories=("all",),
        status=True,
        scale=_WORKLOAD_SCALE,
        prepare=_default_replicas,
    ),
    # Run to completion by the sandbox's Job controller (jobs.py): smoke tests, analysis jobs.
    ResourceSpec("batch", "v1", "jobs", "Job", categories=("all",), status=True, prepare=prepare_job),
    # What StatefulSets and DaemonSets keep their history in; Sluice keeps Rollouts' revisions there.
    ResourceSpec("apps", "v1", "controllerrevisions", "ControllerRevision"),
    ResourceSpec("events.k8s.io", "v1", "events", "Event", short_names=("ev",)),
    # Leader election's: typed and validated, and only updated at a known resourceVersion.
    ResourceSpec(
        "coordination.k8s.io", "v1", "leases", "Lease", prepare=prepare_lease, unconditional_update=False
    ),
    ResourceSpec(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        namespaced=False,
        categories=("api-extensions",),
    ),
    # What `sluice install` applies from manifests/ (RBAC, the operator's disruption budget):
    # stored as written, as the other built-ins; nothing here enforces them.
    ResourceSpec("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    ResourceSpec("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    ResourceSpec("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    ResourceSpec(
        "rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False
    ),
    ResourceSpec(
        "policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short_names=("pdb",), status=True
    ),
    # apiextensions.k8s.io/v1 customresourcedefinitions: always served by the Store itself.
)
