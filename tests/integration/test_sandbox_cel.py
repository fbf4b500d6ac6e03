"""
CEL validation rules over real HTTP: the sandbox API server refuses what a real one refuses, to the
real `kubernetes` client and to the real kubectl; and `sluice sandbox --crds DIR` serves the
upstream HTTPRoute from ../shared/reference, rules and all.
"""

import copy
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml
from kubernetes.client import ApiClient, ApiException, CustomObjectsApi

from operators.api.rollout import NAME_MESSAGE
from sluice_sandbox.apiserver import SandboxThread
from tests.harness import httproute_crd, sluice_crds
from tests.integration.test_sandbox_kubectl import Kubectl
from tests.reference import HTTPROUTES, reference_file

pytestmark = pytest.mark.integration

REPO = pathlib.Path(__file__).resolve().parents[2]
NS = "shop"
LONG = "a" * 57  # one beyond the Rollout's 56 characters
PATH_MESSAGE = "must not contain '//' when type one of ['Exact', 'PathPrefix']"
START_TIMEOUT = 60.0
SLUICE = [sys.executable, "-c", "import sys; from operators.cli import main; sys.exit(main(sys.argv[1:]))"]


def rollout(name: str) -> dict[str, Any]:
    body = dict(yaml.safe_load((REPO / "examples" / "rollout-minimal.yaml").read_text()))
    body["metadata"] = {"name": name, "namespace": NS}
    return body


def route(path: str) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": path}}],
                    "backendRefs": [
                        {"name": "web", "port": 80, "weight": 90},
                        {"name": "web-canary", "port": 80},
                    ],
                }
            ],
        },
    }


@pytest.fixture
def api_client(sandbox_api: SandboxThread) -> Iterator[ApiClient]:
    """Sluice's CRDs and the upstream HTTPRoute installed, the namespace made; a real client."""
    for crd in [*sluice_crds(), httproute_crd()]:
        sandbox_api.run(sandbox_api.server.install_crd(crd))
    sandbox_api.run(sandbox_api.store.create("namespaces", {"metadata": {"name": NS}}))
    client = kubernetes.config.new_client_from_config(config_file=str(sandbox_api.kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def kubectl(sandbox_api: SandboxThread, tmp_path: pathlib.Path) -> Kubectl:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    return Kubectl(sandbox_api.kubeconfig, tmp_path / "kubectl-cache")


def create(custom: CustomObjectsApi, body: dict[str, Any], group: str, version: str, plural: str) -> Any:
    return custom.create_namespaced_custom_object(group, version, NS, plural, body)


def test_the_kubernetes_client_gets_a_422_naming_the_rollouts_rule(api_client: ApiClient) -> None:
    custom = CustomObjectsApi(api_client)
    with pytest.raises(ApiException) as refused:
        create(custom, rollout(LONG), "sluice.dev", "v1alpha1", "rollouts")
    assert refused.value.status == 422
    status = yaml.safe_load(refused.value.body)
    assert status["reason"] == "Invalid"
    assert (
        status["message"]
        == f'Rollout.sluice.dev "{LONG}" is invalid: <nil>: Invalid value: "object": {NAME_MESSAGE}'
    )
    assert status["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": f'Invalid value: "object": {NAME_MESSAGE}',
            "field": "<nil>",
        }
    ]
    assert create(custom, rollout("web"), "sluice.dev", "v1alpha1", "rollouts")["metadata"]["name"] == "web"


def test_kubectl_apply_is_refused_with_the_rules_message(api_client: ApiClient, kubectl: Kubectl) -> None:
    error = kubectl.fails("apply", "-f", "-", stdin=yaml.safe_dump(rollout(LONG)))
    assert f'The Rollout "{LONG}" is invalid: <nil>: Invalid value: "object": {NAME_MESSAGE}' in error

    no_service = rollout("web")
    no_service["spec"].pop("service", None)
    no_service["spec"]["traffic"] = {"gatewayAPI": {"httpRoute": "web"}}
    error = kubectl.fails("apply", "-f", "-", stdin=yaml.safe_dump(no_service))
    assert (
        'The Rollout "web" is invalid: spec: Invalid value: "object": traffic routes to the Rollout' in error
    )
    assert "rollout.sluice.dev/web created" in kubectl(
        "apply", "-f", "-", stdin=yaml.safe_dump(rollout("web"))
    )


def test_an_httproute_breaking_a_gateway_api_rule_is_refused(api_client: ApiClient, kubectl: Kubectl) -> None:
    custom = CustomObjectsApi(api_client)
    with pytest.raises(ApiException) as refused:
        create(custom, route("/a//b"), "gateway.networking.k8s.io", "v1", "httproutes")
    assert refused.value.status == 422
    [cause] = yaml.safe_load(refused.value.body)["details"]["causes"]
    assert cause == {
        "reason": "FieldValueInvalid",
        "message": f'Invalid value: "object": {PATH_MESSAGE}',
        "field": "spec.rules[0].matches[0].path",
    }
    error = kubectl.fails("apply", "-f", "-", stdin=yaml.safe_dump(route("/a//b")))
    assert f'spec.rules[0].matches[0].path: Invalid value: "object": {PATH_MESSAGE}' in error

    created = create(custom, route("/shop"), "gateway.networking.k8s.io", "v1", "httproutes")
    assert created["spec"]["rules"][0]["backendRefs"][1]["weight"] == 1  # upstream's default, applied


def test_a_crd_whose_rule_does_not_compile_is_refused(api_client: ApiClient, kubectl: Kubectl) -> None:
    crd = copy.deepcopy(next(crd for crd in sluice_crds() if crd["spec"]["names"]["kind"] == "Rollout"))
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"] = [
        {"rule": "self.metadata.name.isURL()", "message": "a URL"}
    ]
    error = kubectl.fails("apply", "-f", "-", stdin=yaml.safe_dump(crd))
    assert 'The CustomResourceDefinition "rollouts.sluice.dev" is invalid' in error
    assert "x-kubernetes-validations[0].rule" in error and "undeclared reference to 'isURL'" in error


# ----- `sluice sandbox --crds DIR` -----


@pytest.fixture
def sandbox_with_reference_crds(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """`sluice sandbox --crds <the reference directory>`, without operator or Prometheus: its kubeconfig."""
    reference = reference_file(HTTPROUTES).parent.parent
    kubeconfig = tmp_path / "kubeconfig"
    command = [
        *SLUICE,
        "sandbox",
        "--no-operator",
        "--prometheus-url=http://127.0.0.1:9",  # never queried: no operator runs
        f"--kubeconfig={kubeconfig}",
        f"--crds={reference}",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = wait_for_banner(process)
        assert "--crds:      HTTPRoute, DestinationRule, VirtualService" in banner
        yield kubeconfig
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for_banner(process: subprocess.Popen[str]) -> str:
    """What the sandbox printed up to 'Press Ctrl-C to stop.', read before a deadline."""
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()  # the sandbox prints its banner, then nothing until stopped
        if not line and process.poll() is not None:
            pytest.fail(f"sluice sandbox exited with {process.returncode}: {''.join(lines)}")
        lines.append(line)
        if "Press Ctrl-C to stop." in line:
            return "".join(lines)
    pytest.fail(f"sluice sandbox did not start within {START_TIMEOUT}s: {''.join(lines)}")


def test_sluice_sandbox_serves_the_upstream_httproute_from_crds_dir(
    sandbox_with_reference_crds: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    kubectl = Kubectl(sandbox_with_reference_crds, tmp_path / "kubectl-cache")
    kubectl("create", "namespace", NS)
    error = kubectl.fails("apply", "-f", "-", stdin=yaml.safe_dump(route("/a//b")))
    refused = f'spec.rules[0].matches[0].path: Invalid value: "object": {PATH_MESSAGE}'
    assert f'The HTTPRoute "web" is invalid: {refused}' in error
    assert "httproute.gateway.networking.k8s.io/web created" in kubectl(
        "apply", "-f", "-", stdin=yaml.safe_dump(route("/shop"))
    )
    served = kubectl.json("get", "crd", "virtualservices.networking.istio.io")
    assert served["status"]["acceptedNames"]["kind"] == "VirtualService"


def test_sluice_sandbox_says_what_is_wrong_with_a_crds_dir(tmp_path: pathlib.Path) -> None:
    (tmp_path / "notes.yaml").write_text("kind: ConfigMap\napiVersion: v1\n")
    for directory, words in [
        (tmp_path / "missing", "no such directory"),
        (tmp_path, "no CustomResourceDefinition in its YAML files"),
    ]:
        result = subprocess.run(
            [*SLUICE, "sandbox", "--no-operator", f"--kubeconfig={tmp_path / 'kc'}", f"--crds={directory}"],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )
        assert result.returncode == 2
        assert result.stderr.strip() == f"sluice: --crds {directory}: {words}"
