"""What the kind e2e suite ships with, checked without Docker: its GitHub workflow, the overlay it
applies (manifests/ as they ship, the image aside), the pinned node image, and the Dockerfile that
the Deployment runs.

These read e2e/'s files; they import nothing from e2e/ (tests/ never depends on it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from operators.cli import build_parser
from operators.cli.run import handle as run_handler
from operators.metrics.hosts import parse_host
from operators.operator import PROMETHEUS_URL_ENV

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "e2e.yaml"
OVERLAY = REPO / "e2e" / "overlay"
KIND_CONFIG = REPO / "e2e" / "kind-cluster.yaml"
PROMETHEUS = REPO / "e2e" / "prometheus.yaml"
DOCKERFILE = REPO / "Dockerfile"
E2E_IMAGE = "sluice:e2e"
MIN_KUBERNETES = (1, 31)
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


# ---- helpers ---------------------------------------------------------------------------------------


def workflow() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def triggers(flow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 (PyYAML) reads the key `on` as the boolean True.
    found = flow.get("on", flow.get(True))
    return found if isinstance(found, dict) else {name: None for name in found or []}


def the_job(flow: dict[Any, Any]) -> dict[str, Any]:
    jobs = list(flow["jobs"].values())
    assert len(jobs) == 1, "one job: build, create the cluster, run the suite"
    job: dict[str, Any] = jobs[0]
    return job


def run_lines(job: dict[str, Any]) -> list[str]:
    return [line.strip() for step in job["steps"] for line in str(step.get("run", "")).splitlines()]


def kustomize(directory: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def by_identity(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects}


def operator_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return by_identity(objects)[("Deployment", "sluice-system", "sluice-operator")]


def operator_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    container: dict[str, Any] = next(c for c in containers if c["name"] == "operator")
    return container


def dockerfile_instruction(name: str) -> list[str]:
    """The exec form (a JSON array) of the Dockerfile's last `name` instruction."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith(f"{name} ")]
    assert lines, f"the Dockerfile has no {name}"
    value: list[str] = json.loads(lines[-1].removeprefix(f"{name} "))
    return value


def node_images() -> list[str]:
    config = yaml.safe_load(KIND_CONFIG.read_text())
    return [node["image"] for node in config["nodes"]]


# ---- the workflow ----------------------------------------------------------------------------------


def test_the_workflow_runs_on_push_and_pull_request_on_ubuntu() -> None:
    flow = workflow()
    assert {"push", "pull_request"} <= set(triggers(flow))
    assert the_job(flow)["runs-on"] == "ubuntu-latest"


def test_the_workflow_sets_up_python_3_11_or_newer() -> None:
    steps = the_job(workflow())["steps"]
    setup = [s for s in steps if str(s.get("uses", "")).startswith("actions/setup-python@")]
    assert setup, "actions/setup-python sets up the interpreter"
    major, minor = (int(part) for part in str(setup[0]["with"]["python-version"]).split(".")[:2])
    assert (major, minor) >= (3, 11)


def test_the_workflow_installs_a_pinned_kind_the_node_image_was_built_for() -> None:
    job = the_job(workflow())
    version = job["env"]["KIND_VERSION"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+", version), f"kind pinned to a release, not {version!r}"
    lines = run_lines(job)
    assert any("kind/releases/download/${KIND_VERSION}/kind-linux-amd64" in line for line in lines)
    assert any("sha256sum --check" in line for line in lines), "the download is checked"
    # A node image is built for one kind release: the one the kind config names is the one installed.
    assert f"kind {version}" in KIND_CONFIG.read_text()


def test_the_workflow_installs_a_pinned_kubectl() -> None:
    job = the_job(workflow())
    assert re.fullmatch(r"v\d+\.\d+\.\d+", job["env"]["KUBECTL_VERSION"])
    assert any(
        "dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/amd64/kubectl" in line for line in run_lines(job)
    )


def test_the_workflow_runs_pytest_e2e_where_a_skip_is_a_failure() -> None:
    job = the_job(workflow())
    assert job["env"]["CI"] == "true"
    # CI=true alone must not: the main CI has no Docker and skips the suite.
    assert job["env"]["SLUICE_E2E_REQUIRED"] == "1"
    lines = run_lines(job)
    assert any(line.startswith("pip install -e '.[test]'") for line in lines)
    assert any(line.startswith("pytest e2e") for line in lines)


def test_the_workflow_uploads_the_operator_and_cluster_logs_on_failure() -> None:
    steps = the_job(workflow())["steps"]
    on_failure = [s for s in steps if s.get("if") == "failure()"]
    commands = "\n".join(str(s.get("run", "")) for s in on_failure)
    assert "kubectl logs -n sluice-system -l app.kubernetes.io/component=operator" in commands
    assert "kind export logs" in commands
    assert any(str(s.get("uses", "")).startswith("actions/upload-artifact@") for s in on_failure)


# ---- the cluster ------------------------------------------------------------------------------------


def test_the_node_image_is_pinned_by_digest_to_kubernetes_1_31_or_newer() -> None:
    images = node_images()
    assert images
    for image in images:
        match = re.fullmatch(r"kindest/node:v(\d+)\.(\d+)\.(\d+)@sha256:[0-9a-f]{64}", image)
        assert match, f"{image}: pin the tag and the digest from kind's release notes"
        assert (int(match[1]), int(match[2])) >= MIN_KUBERNETES, image


# ---- the overlay ------------------------------------------------------------------------------------


@needs_kubectl
def test_the_overlay_runs_the_e2e_image_without_pulling_it() -> None:
    container = operator_container(operator_deployment(kustomize(OVERLAY)))
    assert container["image"] == E2E_IMAGE
    assert container["imagePullPolicy"] == "IfNotPresent", "kind has it loaded; no registry has it"


@needs_kubectl
def test_the_overlay_is_manifests_as_they_ship_but_for_the_image_and_metric_hosts() -> None:
    shipped, overlay = by_identity(kustomize(REPO / "manifests")), by_identity(kustomize(OVERLAY))
    assert set(overlay) == set(shipped), "nothing added (no RBAC of its own), nothing left out"
    for identity, body in shipped.items():
        if identity != ("Deployment", "sluice-system", "sluice-operator"):
            assert overlay[identity] == body, f"{identity} differs from manifests/"
    # The operator Deployment: only the image, its pull policy and the allowed metric hosts.
    deployment = json.loads(json.dumps(overlay[("Deployment", "sluice-system", "sluice-operator")]))
    container = operator_container(deployment)
    shipped_container = operator_container(shipped[("Deployment", "sluice-system", "sluice-operator")])
    extra_args = container["args"][len(shipped_container["args"]) :]
    assert container["args"][: len(shipped_container["args"])] == shipped_container["args"]
    assert extra_args and all(arg.startswith("--metric-hosts=") for arg in extra_args)
    container.update(image=shipped_container["image"], args=shipped_container["args"])
    del container["imagePullPolicy"]
    assert deployment == shipped[("Deployment", "sluice-system", "sluice-operator")]


@needs_kubectl
def test_the_overlay_has_the_service_account_rbac_and_webhook() -> None:
    overlay = by_identity(kustomize(OVERLAY))
    for identity in [
        ("ServiceAccount", "sluice-system", "sluice"),
        ("ClusterRole", "", "sluice-operator"),
        ("ClusterRoleBinding", "", "sluice-operator"),
        ("Role", "sluice-system", "sluice-leader-election"),
        ("RoleBinding", "sluice-system", "sluice-leader-election"),
        ("Service", "sluice-system", "sluice-webhook"),
        ("MutatingWebhookConfiguration", "", "sluice-sidecar-injector"),
    ]:
        assert identity in overlay, f"{identity} is missing from the overlay"
    spec = operator_deployment(list(overlay.values()))["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "sluice"


# ---- the image and what runs it --------------------------------------------------------------------


@needs_kubectl
def test_the_deployment_runs_the_dockerfiles_entrypoint_with_args_sluice_run_accepts() -> None:
    entrypoint = dockerfile_instruction("ENTRYPOINT")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["sluice"] and scripts["sluice"] == "operators.cli:main"
    container = operator_container(operator_deployment(kustomize(OVERLAY)))
    assert "command" not in container, "no command: the image's ENTRYPOINT runs, with args after it"
    for args in (container["args"], dockerfile_instruction("CMD")):
        parsed = build_parser().parse_args(args)
        assert parsed.handler is run_handler, f"{args} is not `sluice run ...`"


def test_the_dockerfile_installs_the_package_and_runs_as_a_numeric_user() -> None:
    text = DOCKERFILE.read_text()
    assert "COPY operators ./operators" in text and re.search(r"pip install [^\n]*\s\.(\s|$)", text)
    user = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert user and user[-1].isdigit(), "runAsNonRoot is checked against a numeric user"


# ---- Prometheus, as the operator in the cluster reaches it ----------------------------------------


@needs_kubectl
def test_the_operator_reaches_the_e2e_prometheus_at_its_default_and_allowed_hosts() -> None:
    documents = [d for d in yaml.safe_load_all(PROMETHEUS.read_text()) if d]
    # A Service `name` in `namespace` is reached at name.namespace:port.
    served = {
        (f"{d['metadata']['name']}.{d['metadata']['namespace']}", port["port"])
        for d in documents
        if d["kind"] == "Service"
        for port in d["spec"]["ports"]
    }
    container = operator_container(operator_deployment(kustomize(OVERLAY)))
    env = {e["name"]: e.get("value") for e in container.get("env") or []}
    default = urlsplit(env[PROMETHEUS_URL_ENV])
    assert (default.hostname, default.port) in served, f"{env[PROMETHEUS_URL_ENV]}: no such Service"
    for arg in container["args"]:
        if arg.startswith("--metric-hosts="):
            host = parse_host(arg.removeprefix("--metric-hosts="))
            assert (host.host, host.port) in served, f"{arg}: e2e/prometheus.yaml has no such Service"
    prometheus = next(d for d in documents if d["kind"] == "Deployment")
    image = prometheus["spec"]["template"]["spec"]["containers"][0]["image"]
    assert re.fullmatch(r"prom/prometheus:v[\d.]+@sha256:[0-9a-f]{64}", image), f"{image}: pin it by digest"
