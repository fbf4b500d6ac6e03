"""
The real kubectl, with its default settings, against the sandbox API server: what a newcomer
types after `sluice sandbox`. Each test gets a fresh sandbox, kubeconfig and kubectl cache.
"""

import copy
import json
import pathlib
import shutil
import subprocess
import urllib.error
import urllib.request
from typing import Any

import pytest
import yaml

from sluice_sandbox.apiserver import SandboxThread

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
]

REPO = pathlib.Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "rollout.yaml"
EXAMPLE = REPO / "examples" / "rollout-minimal.yaml"
NS = "shop"
TIMEOUT = 30  # seconds, for any one kubectl command


class Kubectl:
    """Runs the real kubectl against the sandbox, with a deadline on every command."""

    def __init__(self, kubeconfig: pathlib.Path, cache_dir: pathlib.Path) -> None:
        self.base = [str(shutil.which("kubectl")), f"--kubeconfig={kubeconfig}", f"--cache-dir={cache_dir}"]

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, *args], input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        """The output of a command that must succeed."""
        result = self.run(*args, stdin=stdin)
        assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
        return result.stdout

    def fails(self, *args: str, stdin: str | None = None) -> str:
        """The error output of a command that must fail."""
        result = self.run(*args, stdin=stdin)
        assert result.returncode != 0, f"kubectl {' '.join(args)} succeeded: {result.stdout}"
        return result.stderr

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))

    def start(self, *args: str) -> subprocess.Popen[str]:
        """A command in the background (the caller waits for it with a deadline)."""
        return subprocess.Popen(
            [*self.base, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )


@pytest.fixture
def kubectl(sandbox_api: SandboxThread, tmp_path: pathlib.Path) -> Kubectl:
    return Kubectl(sandbox_api.kubeconfig, tmp_path / "kubectl-cache")


@pytest.fixture
def shop(kubectl: Kubectl) -> str:
    """The Rollout CRD applied with kubectl, and the namespace created with kubectl (in protobuf)."""
    kubectl("apply", "-f", str(CRD))
    assert kubectl("create", "namespace", NS).strip() == f"namespace/{NS} created"
    return NS


@pytest.fixture
def web(kubectl: Kubectl, shop: str) -> dict[str, Any]:
    kubectl("apply", "-f", str(EXAMPLE), "-n", shop)
    return dict(kubectl.json("get", "rollout", "web", "-n", shop))


def example() -> dict[str, Any]:
    return dict(yaml.safe_load(EXAMPLE.read_text()))


def set_status(sandbox: SandboxThread, status: dict[str, Any], name: str = "web") -> None:
    """Write the status as the operator would (there is no operator in these tests)."""
    sandbox.run(sandbox.store.patch_status("rollouts", NS, name, {"status": status}))


def table(output: str) -> list[list[str]]:
    return [line.split() for line in output.strip().splitlines() if line.strip()]


# ----- Applying -----


def test_apply_the_crd_and_the_example_then_apply_again(
    kubectl: Kubectl, shop: str, tmp_path: pathlib.Path
) -> None:
    resources = table(kubectl("api-resources", "--api-group=sluice.dev"))
    assert resources[1] == ["rollouts", "sro", "sluice.dev/v1alpha1", "true", "Rollout"]

    # kubectl validates on the server (fieldValidation=Strict), which the OpenAPI v3 document
    # says the server supports: no --validate=false needed.
    assert kubectl("apply", "-f", str(EXAMPLE), "-n", shop).strip() == "rollout.sluice.dev/web created"
    stored = kubectl.json("get", "rollout", "web", "-n", shop)
    annotations = stored["metadata"]["annotations"]
    applied = json.loads(annotations["kubectl.kubernetes.io/last-applied-configuration"])
    assert applied["spec"]["strategy"] == example()["spec"]["strategy"]
    assert stored["spec"]["paused"] is False and stored["spec"]["progressDeadlineSeconds"] == 600  # defaults

    # Edited: a new image, and `traffic` removed. kubectl computes a merge patch (a custom resource).
    edited = example()
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/acme/web:1.1.0"
    del edited["spec"]["traffic"]
    manifest = tmp_path / "rollout.yaml"
    manifest.write_text(yaml.safe_dump(edited))
    assert kubectl("apply", "-f", str(manifest), "-n", shop).strip() == "rollout.sluice.dev/web configured"
    patched = kubectl.json("get", "rollout", "web", "-n", shop)
    assert patched["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/web:1.1.0"
    assert "traffic" not in patched["spec"]
    assert patched["metadata"]["generation"] == 2
    assert kubectl("apply", "-f", str(manifest), "-n", shop).strip() == "rollout.sluice.dev/web unchanged"


BUILTINS = """
apiVersion: v1
kind: Namespace
metadata: {name: store}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: store}
data: {color: blue}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: store}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - {name: app, image: 'api:1'}
      - {name: proxy, image: 'envoy:1'}
"""


def test_apply_builtins_uses_strategic_merge_patches(kubectl: Kubectl) -> None:
    assert table(kubectl("apply", "-f", "-", stdin=BUILTINS)) == [
        ["namespace/store", "created"],
        ["configmap/settings", "created"],
        ["deployment.apps/api", "created"],
    ]

    # A container dropped and an image changed: kubectl sends a strategic merge patch computed
    # from its own types (`$setElementOrder`, `$patch: delete`), which the sandbox applies.
    edited = (
        BUILTINS.replace("data: {color: blue}", "data: {color: green}")
        .replace("      - {name: proxy, image: 'envoy:1'}\n", "")
        .replace("'api:1'", "'api:2'")
    )
    assert table(kubectl("apply", "-f", "-", stdin=edited)) == [
        ["namespace/store", "unchanged"],
        ["configmap/settings", "configured"],
        ["deployment.apps/api", "configured"],
    ]
    deployment = kubectl.json("get", "deployment", "api", "-n", "store")
    assert deployment["spec"]["template"]["spec"]["containers"] == [{"name": "app", "image": "api:2"}]
    assert kubectl("get", "configmap", "settings", "-n", "store", "-o", "jsonpath={.data.color}") == "green"


# `kubectl create <kind>` writes through client-go's typed clients, which send protobuf.
GENERATORS = [
    ["create", "namespace", "made"],
    ["create", "configmap", "settings", "--from-literal=color=blue", "--from-literal=size=2"],
    ["create", "secret", "generic", "token", "--from-literal=key=s3cr3t"],
    [
        "create",
        "secret",
        "docker-registry",
        "pull",
        "--docker-server=r.io",
        "--docker-username=u",
        "--docker-password=p",
    ],
    ["create", "deployment", "web", "--image=nginx:1.27", "--replicas=3", "--port=8080"],
    ["create", "deployment", "idle", "--image=nginx:1.27", "--replicas=0"],
    ["create", "service", "clusterip", "web", "--tcp=80:http", "--tcp=443:8443"],
    ["create", "service", "nodeport", "edge", "--tcp=80:8080", "--node-port=30001"],
    ["create", "service", "externalname", "db", "--external-name=db.example.com"],
    ["create", "serviceaccount", "robot"],
]


def _meaningful(value: Any) -> Any:
    """Without nulls and empty objects: what `--dry-run=client -o json` and the server differ in."""
    if isinstance(value, dict):
        cleaned = {key: _meaningful(item) for key, item in value.items()}
        return {key: item for key, item in cleaned.items() if item not in (None, {})}
    if isinstance(value, list):
        return [_meaningful(item) for item in value]
    return value


def _covered(expected: Any, actual: Any) -> bool:
    """Whether everything expected is in the actual object (the server adds its own fields)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and _covered(value, actual[key]) for key, value in expected.items()
        )
    return bool(expected == actual)


@pytest.mark.parametrize("command", GENERATORS, ids=lambda command: "-".join(command[1:3]))
def test_kubectl_create_sends_protobuf_and_stores_what_it_means(kubectl: Kubectl, command: list[str]) -> None:
    intended = _meaningful(kubectl.json(*command, "-n", "default", "--dry-run=client"))
    assert "created" in kubectl(*command, "-n", "default")
    kind, name = intended["kind"].lower(), intended["metadata"]["name"]
    stored = _meaningful(kubectl.json("get", kind, name, "-n", "default"))
    assert _covered(intended, stored), (intended, stored)


# ----- Reading -----


def test_get_prints_the_printer_columns(
    sandbox_api: SandboxThread, kubectl: Kubectl, web: dict[str, Any]
) -> None:
    set_status(
        sandbox_api,
        {
            "phase": "Progressing",
            "strategy": "Canary",
            "canaryWeight": 20,
            "currentStepIndex": 1,
            "stableRevision": "7d4b9c",
            "canaryRevision": "5f6a8e",
        },
    )
    [header, row] = table(kubectl("get", "rollouts", "-n", NS))
    assert header == ["NAME", "PHASE", "STRATEGY", "WEIGHT", "STEP", "STABLE", "CANARY", "AGE"]
    assert row[:7] == ["web", "Progressing", "Canary", "20", "1", "7d4b9c", "5f6a8e"] and row[7].endswith("s")

    [header, row] = table(kubectl("get", "rollouts", "-A"))
    assert header[:3] == ["NAMESPACE", "NAME", "PHASE"] and row[:3] == [NS, "web", "Progressing"]
    assert table(kubectl("get", "sro", "-n", NS))[1][0] == "web"  # the short name
    assert table(kubectl("get", "sluice", "-n", NS))[1][:2] == ["web", "Progressing"]  # the category
    [header, row] = table(kubectl("get", "rollout", "web", "-n", NS, "--show-labels"))
    assert header[-1] == "LABELS" and row[-1] == "<none>"


def test_get_in_the_other_output_formats(kubectl: Kubectl, web: dict[str, Any]) -> None:
    as_yaml = yaml.safe_load(kubectl("get", "rollout", "web", "-n", NS, "-o", "yaml"))
    assert (as_yaml["kind"], as_yaml["metadata"]["name"]) == ("Rollout", "web")
    assert kubectl.json("get", "rollout", "web", "-n", NS)["spec"]["replicas"] == 4
    weight = "{.spec.strategy.canary.steps[0].setWeight}"
    assert kubectl("get", "rollout", "web", "-n", NS, "-o", f"jsonpath={weight}") == "20"
    assert kubectl("get", "rollouts", "-n", NS, "-o", "name").strip() == "rollout.sluice.dev/web"
    listed = kubectl.json("get", "rollouts", "-n", NS)
    assert [item["metadata"]["name"] for item in listed["items"]] == ["web"]


def test_get_builtins_prints_their_columns(sandbox_api: SandboxThread, kubectl: Kubectl, shop: str) -> None:
    kubectl("create", "deployment", "api", "--image=api:1", "--replicas=2", "-n", shop)
    kubectl("create", "service", "clusterip", "api", "--tcp=80:8080", "-n", shop)
    sandbox_api.wait_for("deployments", shop, "api", lambda d: d.get("status", {}).get("readyReplicas") == 2)
    lines = table(kubectl("get", "deploy,svc", "-n", shop))
    assert lines[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert lines[1][:4] == ["deployment.apps/api", "2/2", "2", "2"]
    assert lines[2] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert lines[3][:5] == ["service/api", "ClusterIP", "<none>", "<none>", "80/TCP"]
    wide = table(kubectl("get", "deploy", "api", "-n", shop, "-o", "wide"))
    assert wide[0][-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"] and wide[1][-2:] == ["api:1", "app=api"]
    [header, row] = table(kubectl("get", "namespace", shop))
    assert header == ["NAME", "STATUS", "AGE"] and row[:2] == [shop, "Active"]


def test_explain_reads_the_crd_schema(kubectl: Kubectl, shop: str) -> None:
    explained = kubectl("explain", "rollout.spec.strategy.canary")
    assert "The canary strategy: explicit steps" in explained and "canaryReplicas" in explained


# ----- Writing -----


def test_patch_merge_and_json(kubectl: Kubectl, web: dict[str, Any]) -> None:
    kubectl("patch", "rollout", "web", "-n", NS, "--type", "merge", "-p", '{"spec": {"replicas": 3}}')
    assert kubectl.json("get", "rollout", "web", "-n", NS)["spec"]["replicas"] == 3
    kubectl(
        "patch",
        "rollout",
        "web",
        "-n",
        NS,
        "--type",
        "json",
        "-p",
        '[{"op": "replace", "path": "/spec/strategy/canary/steps/0/setWeight", "value": 30}]',
    )
    assert kubectl.json("get", "rollout", "web", "-n", NS)["spec"]["strategy"]["canary"]["steps"][0] == {
        "setWeight": 30
    }
    # Fields the schema does not know are dropped, with a warning (fieldValidation=Warn for patch).
    result = kubectl.run(
        "patch", "rollout", "web", "-n", NS, "--type", "merge", "-p", '{"spec": {"bogus": 1}}'
    )
    assert result.returncode == 0 and 'Warning: unknown field "spec.bogus"' in result.stderr


def test_invalid_rollouts_are_refused_naming_the_field(
    kubectl: Kubectl, web: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    error = kubectl.fails(
        "patch",
        "rollout",
        "web",
        "-n",
        NS,
        "--type",
        "merge",
        "-p",
        '{"spec": {"strategy": {"canary": {"steps": [{"setWeight": 101}]}}}}',
    )
    assert error.strip() == (
        'The Rollout "web" is invalid: spec.strategy.canary.steps[0].setWeight: Invalid value: 101: '
        "spec.strategy.canary.steps[0].setWeight in body should be less than or equal to 100"
    )

    invalid = example()
    invalid["metadata"]["name"] = "other"
    invalid["spec"]["replicas"] = -1
    manifest = tmp_path / "invalid.yaml"
    manifest.write_text(yaml.safe_dump(invalid))
    error = kubectl.fails("apply", "-f", str(manifest), "-n", NS)
    assert (
        'The Rollout "other" is invalid: spec.replicas: Invalid value: -1: spec.replicas in body should '
        "be greater than or equal to 0" in error
    )

    # kubectl's default --validate=strict refuses unknown fields; --validate=false drops them.
    unknown = example()
    unknown["metadata"]["name"] = "typo"
    unknown["spec"]["replica"] = 2
    manifest.write_text(yaml.safe_dump(unknown))
    error = kubectl.fails("apply", "-f", str(manifest), "-n", NS)
    assert 'strict decoding error: unknown field "spec.replica"' in error
    kubectl("apply", "-f", str(manifest), "-n", NS, "--validate=false")
    assert "replica" not in kubectl.json("get", "rollout", "typo", "-n", NS)["spec"]


def test_server_side_apply(kubectl: Kubectl, shop: str) -> None:
    # More in test_sandbox_server_side_apply.py: conflicts, --force-conflicts, removal.
    output = kubectl("apply", "--server-side", "-f", str(EXAMPLE), "-n", shop)
    assert output.strip() == "rollout.sluice.dev/web serverside-applied"


def test_status_writes_are_validated_on_their_own(kubectl: Kubectl, web: dict[str, Any]) -> None:
    kubectl(
        "patch",
        "rollout",
        "web",
        "-n",
        NS,
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        '{"status": {"phase": "Healthy"}, "spec": {"replicas": -1}}',
    )  # spec: ignored at /status
    stored = kubectl.json("get", "rollout", "web", "-n", NS)
    assert stored["status"]["phase"] == "Healthy" and stored["spec"]["replicas"] == 4
    error = kubectl.fails(
        "patch",
        "rollout",
        "web",
        "-n",
        NS,
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        '{"status": {"phase": "Bogus"}}',
    )
    assert 'status.phase: Unsupported value: "Bogus": supported values: "Initializing"' in error


def test_annotate_and_label(kubectl: Kubectl, web: dict[str, Any]) -> None:
    assert kubectl("annotate", "rollout", "web", "-n", NS, "sluice.dev/promote=1").strip() == (
        "rollout.sluice.dev/web annotated"
    )
    assert "'sluice.dev/promote' already has a value (1)" in kubectl.fails(
        "annotate", "rollout", "web", "-n", NS, "sluice.dev/promote=2"
    )
    kubectl("annotate", "rollout", "web", "-n", NS, "sluice.dev/promote=2", "--overwrite")
    annotations = kubectl.json("get", "rollout", "web", "-n", NS)["metadata"]["annotations"]
    assert annotations["sluice.dev/promote"] == "2"

    labelled = kubectl("label", "rollout", "web", "-n", NS, "team=payments")
    assert labelled.strip() == "rollout.sluice.dev/web labeled"
    assert table(kubectl("get", "rollouts", "-n", NS, "-l", "team=payments", "-o", "name")) == [
        ["rollout.sluice.dev/web"]
    ]
    assert "No resources found" in kubectl.run("get", "rollouts", "-n", NS, "-l", "team=other").stderr


def test_delete_collects_the_objects_the_rollout_owns(kubectl: Kubectl, web: dict[str, Any]) -> None:
    owned = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "web-owned",
            "namespace": NS,
            "ownerReferences": [
                {
                    "apiVersion": "sluice.dev/v1alpha1",
                    "kind": "Rollout",
                    "name": "web",
                    "uid": web["metadata"]["uid"],
                }
            ],
        },
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(owned))
    assert kubectl("delete", "rollout", "web", "-n", NS).strip() == 'rollout.sluice.dev "web" deleted'
    assert "NotFound" in kubectl.fails("get", "configmap", "web-owned", "-n", NS)
    assert "NotFound" in kubectl.fails("get", "rollout", "web", "-n", NS)


def test_pods_terminate_gracefully_unless_forced(kubectl: Kubectl, shop: str) -> None:
    def pod(name: str, **metadata: Any) -> str:
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, **metadata},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
            }
        )

    kubectl("create", "-n", NS, "-f", "-", stdin=pod("held", finalizers=["example.com/hold"]))
    assert kubectl("delete", "pod", "held", "-n", NS, "--wait=false").strip() == 'pod "held" deleted'
    assert table(kubectl("get", "pod", "held", "-n", NS, "--no-headers"))[0][2] == "Terminating"

    kubectl("create", "-n", NS, "-f", "-", stdin=pod("forced"))
    forced = kubectl.run("delete", "pod", "forced", "-n", NS, "--grace-period=0", "--force")
    assert forced.returncode == 0 and forced.stdout.strip() == 'pod "forced" force deleted', forced.stderr
    assert "NotFound" in kubectl.fails("get", "pod", "forced", "-n", NS)

    # By default kubectl waits until the pod is gone: the simulated kubelet stops it within a second.
    kubectl("create", "-n", NS, "-f", "-", stdin=pod("graceful"))
    assert kubectl("delete", "pod", "graceful", "-n", NS).strip() == 'pod "graceful" deleted'
    assert "NotFound" in kubectl.fails("get", "pod", "graceful", "-n", NS)


# ----- Waiting -----


@pytest.mark.parametrize(
    ("condition", "status"),
    [
        ("condition=Ready", {"conditions": [{"type": "Ready", "status": "True", "reason": "Promoted"}]}),
        ("jsonpath={.status.phase}=Healthy", {"phase": "Healthy"}),
    ],
    ids=["condition", "jsonpath"],
)
def test_wait(
    sandbox_api: SandboxThread, kubectl: Kubectl, web: dict[str, Any], condition: str, status: dict[str, Any]
) -> None:
    waiting = kubectl.start("wait", f"--for={condition}", "rollout/web", "-n", NS, "--timeout=30s")
    try:
        # kubectl wait lists with fieldSelector=metadata.name=web, then watches from there.
        sandbox_api.run(sandbox_api.store.wait_for_watchers("rollouts", timeout=TIMEOUT), timeout=TIMEOUT + 5)
        set_status(sandbox_api, status)
        out, err = waiting.communicate(timeout=TIMEOUT)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, err
    assert out.strip() == "rollout.sluice.dev/web condition met"


def test_wait_times_out_while_the_condition_does_not_hold(kubectl: Kubectl, web: dict[str, Any]) -> None:
    error = kubectl.fails("wait", "--for=condition=Ready", "rollout/web", "-n", NS, "--timeout=1s")
    assert "timed out waiting for the condition" in error


def test_wait_for_deletion(sandbox_api: SandboxThread, kubectl: Kubectl, web: dict[str, Any]) -> None:
    held = copy.deepcopy(example())
    held["metadata"]["finalizers"] = ["example.com/hold"]
    kubectl("apply", "-f", "-", "-n", NS, stdin=json.dumps(held))
    kubectl("delete", "rollout", "web", "-n", NS, "--wait=false")
    waiting = kubectl.start("wait", "--for=delete", "rollout/web", "-n", NS, "--timeout=30s")
    try:
        sandbox_api.run(sandbox_api.store.wait_for_watchers("rollouts", timeout=TIMEOUT), timeout=TIMEOUT + 5)
        kubectl(
            "patch", "rollout", "web", "-n", NS, "--type", "merge", "-p", '{"metadata": {"finalizers": null}}'
        )
        _, err = waiting.communicate(timeout=TIMEOUT)
    finally:
        waiting.kill()
    assert waiting.returncode == 0, err


def test_served_openapi_v2_is_json_only(sandbox_api: SandboxThread) -> None:
    # kubectl asks for v2 in protobuf only, and copes with a 406 (see sandbox/sluice_sandbox/openapi.py).
    with urllib.request.urlopen(f"{sandbox_api.url}/openapi/v2", timeout=TIMEOUT) as response:
        assert json.loads(response.read())["swagger"] == "2.0"
    protobuf = urllib.request.Request(
        f"{sandbox_api.url}/openapi/v2",
        headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"},
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(protobuf, timeout=TIMEOUT)
    assert raised.value.code == 406
