"""The e2e suite's kind cluster with Sluice installed as it ships: the steps e2e/conftest.py runs.

The image is built from the repository's Dockerfile and loaded into kind; `crds/`, the Gateway API
CRDs (standard channel, a pinned release) and `manifests/` (through the overlay e2e/overlay) are
applied with kubectl, so the operator runs in the cluster under its own ServiceAccount and RBAC and
the API server calls its webhook. Prometheus (e2e/prometheus.yaml) runs in the cluster too.

The decisions are pure functions (`environment_problem`, `ipv4_gateway`, `overlay_image`,
`prometheus_objects`); the rest runs docker, kind and kubectl and says what failed, with their
output, when a step does.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pytest_kind import KindCluster

from tests.harness import Harness

REPO = Path(__file__).resolve().parent.parent
E2E = REPO / "e2e"
KIND_CONFIG = E2E / "kind-cluster.yaml"
OVERLAY = E2E / "overlay"
PROMETHEUS_MANIFEST = E2E / "prometheus.yaml"
CRDS = REPO / "crds"
NAMESPACE_MANIFEST = REPO / "manifests" / "namespace.yaml"
# The users' component types of the Application scenarios, served as manifests/operator.yaml expects
# them: the ConfigMap sluice-component-types, mounted at --component-types.
COMPONENT_TYPES = REPO / "examples" / "application" / "component-types"
COMPONENT_TYPES_CONFIGMAP = "sluice-component-types"

# The standard channel of a pinned Gateway API release: HTTPRoute v1, as a cluster would have it.
GATEWAY_API_CRDS = (
    "https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.2.1/standard-install.yaml"
)

OPERATOR_NAMESPACE = "sluice-system"
OPERATOR_DEPLOYMENT = "sluice-operator"
OPERATOR_SELECTOR = "app.kubernetes.io/name=sluice,app.kubernetes.io/component=operator"
MONITORING_NAMESPACE = "monitoring"
PROMETHEUS_DEPLOYMENT = "prometheus"
PROMETHEUS_CONFIGMAP = "prometheus-config"
CONFIG_CHECKSUM_ANNOTATION = "e2e.sluice.dev/config-sha256"
# As the operator (in the cluster) reaches them; the first is its default (SLUICE_PROMETHEUS_URL).
PROMETHEUS_URL = "http://prometheus-operated.monitoring:9090"
DOWN_PROMETHEUS_URL = "http://prometheus-down.monitoring:9090"
# Prometheus' API through the API server's service proxy: the host reaches it with no port-forward.
PROMETHEUS_TARGETS_PATH = (
    "/api/v1/namespaces/monitoring/services/prometheus-operated:web/proxy/api/v1/targets"
)

# Deadlines: generous for a cold runner pulling images, not expected durations.
BUILD_TIMEOUT = 900.0
COMMAND_TIMEOUT = 300.0
READY_TIMEOUT = "300s"
TARGET_TIMEOUT = 180.0

# Set only where the e2e suite must run (.github/workflows/e2e.yaml): a missing Docker engine or tool
# then fails the suite instead of skipping it. CI=true alone does not: the main CI has no Docker.
REQUIRED_ENV = "SLUICE_E2E_REQUIRED"
# kind's own setting for the Docker network it puts nodes on.
KIND_NETWORK_ENV = "KIND_EXPERIMENTAL_DOCKER_NETWORK"
DEFAULT_KIND_NETWORK = "kind"


class E2EError(RuntimeError):
    """A step of setting up the e2e cluster failed; the message says which, with the tool's output."""


# ---- decisions -------------------------------------------------------------------------------------


def environment_problem(
    which: Callable[[str], str | None], docker_answers: Callable[[], str | None]
) -> str | None:
    """Why the e2e suite cannot run here, or None. `docker_answers` says why Docker does not answer
    (asked only when docker is installed): the engine first, as without it nothing else matters."""
    if which("docker") is None:
        return "Docker is not installed: kind needs a Docker engine to create a cluster"
    problem = docker_answers()
    if problem:
        return problem
    for tool, purpose in (
        ("kind", "install kind v0.28.0 (.github/workflows/e2e.yaml pins it)"),
        ("kubectl", "the suite applies the manifests with it"),
    ):
        if which(tool) is None:
            return f"{tool} is not installed: {purpose}"
    return None


def ipv4_gateway(ipam_config: Iterable[Mapping[str, Any]]) -> str | None:
    """The IPv4 gateway of a Docker network (`docker network inspect`'s IPAM.Config), or None.

    kind's network is dual-stack: the IPv6 entry may come first. An entry without a gateway has
    Docker's default, the first address of its subnet.
    """
    for entry in ipam_config:
        gateway, subnet = entry.get("Gateway"), entry.get("Subnet")
        if gateway:
            address = ipaddress.ip_address(gateway)
            if address.version == 4:
                return str(address)
        elif subnet:
            network = ipaddress.ip_network(subnet, strict=False)
            if network.version == 4:
                return str(network.network_address + 1)
    return None


def overlay_image(kustomization: Mapping[str, Any]) -> str:
    """The operator image the overlay runs (its `images:` entry): the one to build and load."""
    images = kustomization.get("images") or []
    if len(images) != 1:
        raise E2EError(f"{OVERLAY / 'kustomization.yaml'}: expected one images: entry, found {len(images)}")
    entry = images[0]
    return f"{entry.get('newName') or entry['name']}:{entry.get('newTag', 'latest')}"


def prometheus_objects(documents: Sequence[Mapping[str, Any]], config_text: str) -> list[dict[str, Any]]:
    """e2e/prometheus.yaml's objects plus the ConfigMap holding `config_text`.

    The Deployment's pod template carries the config's checksum: a new scrape target (a new run's
    exporter port) restarts Prometheus, as a mounted ConfigMap alone would not.
    """
    checksum = hashlib.sha256(config_text.encode()).hexdigest()
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": PROMETHEUS_CONFIGMAP, "namespace": MONITORING_NAMESPACE},
        "data": {"prometheus.yml": config_text},
    }
    objects: list[dict[str, Any]] = []
    for document in documents:
        body = json.loads(json.dumps(document))  # a deep copy of plain YAML data
        if body["kind"] == "Deployment" and body["metadata"]["name"] == PROMETHEUS_DEPLOYMENT:
            template_meta = body["spec"]["template"].setdefault("metadata", {})
            template_meta.setdefault("annotations", {})[CONFIG_CHECKSUM_ANNOTATION] = checksum
        objects.append(body)
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    others = [o for o in objects if o["kind"] != "Namespace"]
    return [*namespaces, configmap, *others]


def targets_up(answer: Mapping[str, Any], target: str) -> bool:
    """Whether Prometheus' /api/v1/targets answer has `target` (host:port) scraped and up."""
    active = (answer.get("data") or {}).get("activeTargets") or []
    return any(
        t.get("health") == "up" and (t.get("discoveredLabels") or {}).get("__address__") == target
        for t in active
    )


# ---- the shell -------------------------------------------------------------------------------------


def run(
    args: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = COMMAND_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run a command and return its stdout; raise E2EError with its output when it fails."""
    try:
        result = subprocess.run(
            list(args),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **(env or {})},
        )
    except subprocess.TimeoutExpired as error:
        raise E2EError(f"`{' '.join(args)}` did not finish within {timeout:g}s") from error
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-4000:]
        raise E2EError(f"`{' '.join(args)}` failed (exit {result.returncode}):\n{output}")
    return result.stdout


def docker_problem() -> str | None:
    """Why no Docker engine answers `docker info` here, or None when one does."""
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=15, check=False)
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer `docker info` within 15s"
    if result.returncode != 0:
        return "no Docker engine is running (`docker info` failed): kind cannot create a cluster here"
    return None


def build_image(image: str) -> None:
    """`docker build -t IMAGE .` at the repository root, from its Dockerfile."""
    run(["docker", "build", "-t", image, str(REPO)], timeout=BUILD_TIMEOUT)


def kind_gateway(network: str | None = None) -> str:
    """The host's address on the kind Docker network: what pods reach the host at (Linux Docker)."""
    network = network or os.environ.get(KIND_NETWORK_ENV) or DEFAULT_KIND_NETWORK
    config = json.loads(run(["docker", "network", "inspect", network, "--format", "{{json .IPAM.Config}}"]))
    gateway = ipv4_gateway(config or [])
    if gateway is None:
        raise E2EError(f"the Docker network {network!r} has no IPv4 gateway: {config}")
    return gateway


@dataclass
class KindEnvironment:
    """The kind cluster and the kubectl that drives it with the admin kubeconfig."""

    cluster: KindCluster
    image: str

    @property
    def kubeconfig(self) -> Path:
        return Path(self.cluster.kubeconfig_path)

    def kubectl(self, *args: str, input: str | None = None, timeout: float = COMMAND_TIMEOUT) -> str:
        return run(
            [str(self.cluster.kubectl_path), *args],
            input=input,
            timeout=timeout,
            env={"KUBECONFIG": str(self.kubeconfig)},
        )

    def apply(self, objects: Iterable[Mapping[str, Any]]) -> None:
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(list(objects)))

    def operator_logs(self, tail: int = 60) -> str:
        """The operator pods' last log lines, for an error message (empty when they cannot be read)."""
        try:
            return self.kubectl(
                "logs",
                "-n",
                OPERATOR_NAMESPACE,
                "-l",
                OPERATOR_SELECTOR,
                "--all-containers",
                "--prefix",
                f"--tail={tail}",
            )
        except E2EError as error:
            return str(error)


def new_kind_cluster(name: str) -> KindCluster:
    """A KindCluster with the kind and kubectl on PATH (pytest-kind would download old ones)."""
    kind, kubectl = shutil.which("kind"), shutil.which("kubectl")
    assert kind and kubectl, "environment_problem() checks both are installed"
    return KindCluster(name, kind_path=Path(kind), kubectl_path=Path(kubectl))


def install_sluice(env: KindEnvironment) -> None:
    """CRDs, then manifests/ through the overlay; waits until the CRDs are Established and the
    operator Deployment is Available with every replica on the newest pod template."""
    env.kubectl("apply", "--server-side", "-f", str(CRDS))
    env.kubectl("apply", "--server-side", "-f", GATEWAY_API_CRDS)
    env.kubectl("wait", "--for=condition=Established", "crd", "--all", f"--timeout={READY_TIMEOUT}")
    # The users' component types, before the operator starts: it reads them at start.
    env.kubectl("apply", "-f", str(NAMESPACE_MANIFEST))
    configmap = env.kubectl(
        "create",
        "configmap",
        COMPONENT_TYPES_CONFIGMAP,
        "-n",
        OPERATOR_NAMESPACE,
        f"--from-file={COMPONENT_TYPES}",
        "--dry-run=client",
        "-o",
        "yaml",
    )
    env.kubectl("apply", "-f", "-", input=configmap)
    existed = bool(
        env.kubectl(
            "get",
            "deployment",
            OPERATOR_DEPLOYMENT,
            "-n",
            OPERATOR_NAMESPACE,
            "--ignore-not-found",
            "-o",
            "name",
        ).strip()
    )
    env.kubectl("apply", "-k", str(OVERLAY))
    if existed:
        # A kept cluster: the same tag now names a new build, which only new pods run.
        env.kubectl("rollout", "restart", f"deployment/{OPERATOR_DEPLOYMENT}", "-n", OPERATOR_NAMESPACE)
    wait_for_operator(env)


def wait_for_operator(env: KindEnvironment) -> None:
    """Every operator replica runs the newest pod template and is ready, and the Deployment is Available."""
    try:
        env.kubectl(
            "rollout",
            "status",
            f"deployment/{OPERATOR_DEPLOYMENT}",
            "-n",
            OPERATOR_NAMESPACE,
            f"--timeout={READY_TIMEOUT}",
        )
        env.kubectl(
            "wait",
            "--for=condition=Available",
            f"deployment/{OPERATOR_DEPLOYMENT}",
            "-n",
            OPERATOR_NAMESPACE,
            f"--timeout={READY_TIMEOUT}",
        )
    except E2EError as error:
        raise E2EError(f"{error}\n\nthe operator's last log lines:\n{env.operator_logs()}") from error


def restart_operator(env: KindEnvironment) -> None:
    """`kubectl rollout restart` the operator, and wait until the new replicas are all ready."""
    env.kubectl("rollout", "restart", f"deployment/{OPERATOR_DEPLOYMENT}", "-n", OPERATOR_NAMESPACE)
    wait_for_operator(env)


def deploy_prometheus(env: KindEnvironment, target: str, config: Mapping[str, Any]) -> None:
    """Prometheus in the cluster with `config` (prometheus.yml); waits until it scrapes `target`."""
    documents = [d for d in yaml.safe_load_all(PROMETHEUS_MANIFEST.read_text()) if d]
    env.apply(prometheus_objects(documents, yaml.safe_dump(dict(config), sort_keys=False)))
    env.kubectl(
        "rollout",
        "status",
        f"deployment/{PROMETHEUS_DEPLOYMENT}",
        "-n",
        MONITORING_NAMESPACE,
        f"--timeout={READY_TIMEOUT}",
    )
    harness = Harness(env.kubeconfig)
    try:
        harness.wait(
            lambda: harness.cluster.request("GET", PROMETHEUS_TARGETS_PATH),
            lambda answer: targets_up(answer, target),
            TARGET_TIMEOUT,
            f"the in-cluster Prometheus to scrape the exporter at {target}",
        )
    except AssertionError as error:
        raise E2EError(
            f"{error}\nPods must reach the host at {target.split(':')[0]} (the kind network's gateway): "
            "a firewall on this machine, Docker Desktop or rootless Docker can prevent it"
        ) from error
