"""`sluice install` and `sluice uninstall` without a cluster: what they would apply, in what order,
when a part counts as ready, and that an installed sluice carries its manifests.

Against an API server (the sandbox): tests/integration/test_cli_install.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from operators.cli import bundle, kustomize
from operators.cli.install import duration, install_phases, uninstall_phases
from operators.cli.readiness import Readiness, deletion_state, describe, readiness
from tests.cli import run_cli
from tests.unit.test_packaging import wheel  # noqa: F401  (the fixture: the operator's wheel)

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """argparse wraps help to the terminal width; a wide one keeps phrases on one line."""
    monkeypatch.setenv("COLUMNS", "200")


def kubectl_kustomize(directory: Path) -> str:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def crd_files() -> list[dict[str, Any]]:
    return [yaml.safe_load(path.read_text()) for path in sorted((ROOT / "crds").glob("*.yaml"))]


# ---- --dry-run: the stream, as kubectl kustomize renders it ------------------------------------------


@needs_kubectl
def test_dry_run_is_the_crds_then_exactly_what_kubectl_kustomize_renders(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(capsys, "install", "--dry-run")
    assert (code, err) == (0, "")
    documents = out.split("---\n")
    crds = crd_files()
    assert [yaml.safe_load(doc) for doc in documents[: len(crds)]] == crds, "the CRDs first, as in crds/"
    assert "---\n".join(documents[len(crds) :]) == kubectl_kustomize(ROOT / "manifests"), (
        "then manifests/ byte for byte as `kubectl kustomize manifests` prints it"
    )


def test_dry_run_with_an_image_changes_the_operator_image_only(capsys: pytest.CaptureFixture[str]) -> None:
    _, plain, _ = run_cli(capsys, "install", "--dry-run")
    code, out, err = run_cli(
        capsys, "install", "--dry-run", "--image", "registry.example.com/sluice@sha256:abc"
    )
    assert (code, err) == (0, "")
    before, after = list(yaml.safe_load_all(plain)), list(yaml.safe_load_all(out))
    changed = [(b["kind"], a) for b, a in zip(before, after, strict=True) if a != b]
    assert [kind for kind, _ in changed] == ["Deployment"]
    containers = changed[0][1]["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == ["registry.example.com/sluice@sha256:abc"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["install", "--image", ""], "invalid image ''"),
        (["install", "--image", "a b"], "invalid image 'a b'"),
        (["install", "--timeout", "soon"], "invalid duration 'soon'"),
        (["uninstall", "--timeout", "0"], "invalid duration '0'"),
    ],
)
def test_bad_flags_are_refused_by_name(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert message in err


@pytest.mark.parametrize(("text", "seconds"), [("120", 120.0), ("90s", 90.0), ("2m", 120.0), ("0.5", 0.5)])
def test_durations(text: str, seconds: float) -> None:
    assert duration(text) == seconds


def test_uninstall_dry_run_lists_what_it_would_delete_and_keeps_the_crds_unless_asked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(capsys, "uninstall", "--dry-run")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "would delete mutatingwebhookconfiguration sluice-sidecar-injector"
    assert lines[-1] == "would delete namespace sluice-system"
    assert not any(" crd " in line for line in lines)
    assert "kept the CRDs" in err and "--crds" in err

    code, out, err = run_cli(capsys, "uninstall", "--dry-run", "--crds")
    assert code == 0
    assert out.splitlines()[:5] == [
        "would delete crd applications.sluice.dev",
        "would delete crd clustermetrictemplates.sluice.dev",
        "would delete crd metrictemplates.sluice.dev",
        "would delete crd rollouts.sluice.dev",
        "would delete crd sidecarsets.sluice.dev",
    ]
    assert err == ""


def test_help_gives_examples_and_warns_that_crds_take_every_rollout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_cli(capsys, "install", "--help")
    assert code == 0
    for phrase in [
        "--dry-run",
        "--image IMAGE",
        "--timeout DURATION",
        "--wait, --no-wait",
        "--kubeconfig PATH",
    ]:
        assert phrase in out
    assert "sluice install --dry-run > sluice.yaml" in out
    code, out, _ = run_cli(capsys, "uninstall", "--help")
    assert code == 0
    assert "EVERY Rollout, Application and SidecarSet" in out
    assert "sluice uninstall --crds" in out


# ---- The kustomize subset --------------------------------------------------------------------------


def write(path: Path, documents: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(documents))


def deployment(name: str, image: str, namespace: str = "apps") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "initContainers": [{"name": "init", "image": "busybox"}],
                    "containers": [{"name": "main", "image": image}, {"name": "side", "image": "envoy:1.0"}],
                },
            },
        },
    }


@needs_kubectl
def test_resources_in_subdirectories_and_images_render_as_kubectl_kustomize_does(tmp_path: Path) -> None:
    write(
        tmp_path / "base" / "kustomization.yaml",
        [{"resources": ["workloads.yaml"], "images": [{"name": "envoy", "newTag": "2.0"}]}],
    )
    write(
        tmp_path / "base" / "workloads.yaml",
        [
            deployment("b", "registry:5000/team/app:1"),
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "z", "namespace": "apps"}},
        ],
    )
    write(
        tmp_path / "objects.yaml",
        [
            deployment("a", "registry:5000/team/app"),
            {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}},
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "v"},
            },
        ],
    )
    write(
        tmp_path / "kustomization.yaml",
        [
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["objects.yaml", "base"],
                "images": [
                    {"name": "registry:5000/team/app", "newName": "mirror/app", "newTag": "2"},
                    {"name": "busybox", "digest": "sha256:0123"},
                ],
            }
        ],
    )
    assert bundle.to_yaml(kustomize.build(tmp_path)) == kubectl_kustomize(tmp_path)


@pytest.mark.parametrize(
    ("kustomization", "message"),
    [
        ({"resources": ["a.yaml"], "patches": []}, "patches not supported here"),
        ({"resources": ["a.yaml"], "namespace": "x"}, "namespace not supported here"),
        ({"resources": ["../elsewhere.yaml"]}, "only files and directories inside it"),
        ({"resources": ["https://example.com/x.yaml"]}, "only files and directories inside it"),
        ({"resources": ["missing.yaml"]}, "resource 'missing.yaml' does not exist"),
        ({"resources": ["a.yaml", "a.yaml"]}, "listed twice"),
    ],
)
def test_what_the_subset_cannot_reproduce_is_refused_by_name(
    tmp_path: Path, kustomization: dict[str, Any], message: str
) -> None:
    write(tmp_path / "kustomization.yaml", [kustomization])
    write(tmp_path / "a.yaml", [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}])
    with pytest.raises(kustomize.KustomizeError, match=message):
        kustomize.build(tmp_path)


@pytest.mark.parametrize(
    ("image", "split"),
    [
        ("nginx", ("nginx", "")),
        ("nginx:1.27", ("nginx", ":1.27")),
        ("registry:5000/team/app", ("registry:5000/team/app", "")),
        ("registry:5000/team/app:2", ("registry:5000/team/app", ":2")),
        ("ghcr.io/x/y@sha256:00ff", ("ghcr.io/x/y", "@sha256:00ff")),
    ],
)
def test_image_names_split_from_their_tag_or_digest(image: str, split: tuple[str, str]) -> None:
    assert kustomize.split_image(image) == split


# ---- Order ------------------------------------------------------------------------------------------


def kinds(objects: list[Any]) -> list[str]:
    return [obj["kind"] for obj in objects]


def test_install_waits_for_the_crds_then_the_namespace_then_applies_the_rest() -> None:
    phases = install_phases(bundle.install_objects())
    assert [kinds(phase) for phase in phases] == [
        ["CustomResourceDefinition"] * 5,
        ["Namespace"],
        [
            "ServiceAccount",
            "Role",
            "ClusterRole",
            "RoleBinding",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
            "PodDisruptionBudget",
            "MutatingWebhookConfiguration",
        ],
    ]


def test_uninstall_deletes_the_crds_first_and_the_namespace_last() -> None:
    crds, manifests = bundle.crd_objects(), bundle.manifest_objects()
    (only,) = uninstall_phases([], manifests)
    assert kinds(only)[0] == "MutatingWebhookConfiguration"
    assert kinds(only)[-1] == "Namespace"
    first, rest = uninstall_phases(crds, manifests)
    assert kinds(first) == ["CustomResourceDefinition"] * 5, "while the operator still clears finalizers"
    assert rest == only


# ---- Readiness ---------------------------------------------------------------------------------------


def condition(kind: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


CRD = {"kind": "CustomResourceDefinition", "metadata": {"name": "rollouts.sluice.dev"}}


def test_a_crd_is_ready_once_established_and_says_why_not() -> None:
    assert readiness(CRD) == readiness({**CRD, "status": {}})
    assert not readiness(CRD).ready
    assert readiness(CRD).state == "not Established yet"
    conflict = condition("NamesAccepted", "False", "MultipleNamesNotAllowed", '"sro" is already in use')
    refused = readiness({**CRD, "status": {"conditions": [conflict, condition("Established", "False")]}})
    assert (refused.ready, refused.state) == (False, 'its names are not accepted: "sro" is already in use')
    established = readiness({**CRD, "status": {"conditions": [condition("Established", "True")]}})
    assert (established.ready, established.state) == (True, "established")


def operator_deployment(generation: int = 2, desired: int = 2, **status: Any) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": "sluice-operator", "namespace": "sluice-system", "generation": generation},
        "spec": {"replicas": desired},
        "status": status,
    }


UNAVAILABLE = condition(
    "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability."
)


@pytest.mark.parametrize(
    ("deployment", "ready", "state"),
    [
        (operator_deployment(), False, "its controller has not yet seen generation 2"),
        (
            operator_deployment(observedGeneration=2, replicas=3, updatedReplicas=1, availableReplicas=2),
            False,
            "1 of 2 replicas updated",
        ),
        (
            operator_deployment(observedGeneration=2, replicas=3, updatedReplicas=2, availableReplicas=2),
            False,
            "1 old replicas are still terminating",
        ),
        (
            operator_deployment(
                observedGeneration=2,
                replicas=2,
                updatedReplicas=2,
                availableReplicas=0,
                conditions=[UNAVAILABLE],
            ),
            False,
            "0 of 2 replicas available: Deployment does not have minimum availability.",
        ),
        (
            operator_deployment(
                observedGeneration=2,
                conditions=[condition("Progressing", "False", "ProgressDeadlineExceeded", "it is stuck")],
            ),
            False,
            "its rollout is stuck: it is stuck",
        ),
        (
            operator_deployment(observedGeneration=2, replicas=2, updatedReplicas=2, availableReplicas=2),
            True,
            "available (2/2)",
        ),
        (operator_deployment(desired=0, observedGeneration=2), True, "available (0/0)"),
    ],
)
def test_a_deployment_is_ready_as_kubectl_rollout_status_decides(
    deployment: dict[str, Any], ready: bool, state: str
) -> None:
    assert readiness(deployment) == Readiness(ready, state)


def test_a_namespace_being_deleted_is_not_ready() -> None:
    namespace = {"kind": "Namespace", "metadata": {"name": "sluice-system"}, "status": {"phase": "Active"}}
    assert readiness(namespace).ready
    terminating = {**namespace, "status": {"phase": "Terminating"}}
    assert not readiness(terminating).ready
    assert "being deleted" in readiness(terminating).state


def test_other_kinds_are_ready_once_applied() -> None:
    assert readiness({"kind": "ClusterRole", "metadata": {"name": "x"}}).ready


def test_what_an_object_being_deleted_waits_for() -> None:
    meta = {
        "name": "sluice-system",
        "deletionTimestamp": "2025-01-01T00:00:00Z",
        "finalizers": ["kubernetes"],
    }
    remaining = condition(
        "NamespaceContentRemaining", "True", message="Some resources are remaining: pods. has 2"
    )
    state = deletion_state({"kind": "Namespace", "metadata": meta, "status": {"conditions": [remaining]}})
    assert state == (
        "being deleted since 2025-01-01T00:00:00Z, waiting for finalizers kubernetes; "
        "NamespaceContentRemaining: Some resources are remaining: pods. has 2"
    )


def test_parts_are_named_as_progress_lines_show_them() -> None:
    assert describe(CRD) == "crd rollouts.sluice.dev"
    assert describe(operator_deployment()) == "deployment sluice-system/sluice-operator"


# ---- Shipped with the package ------------------------------------------------------------------------


def test_the_wheel_carries_the_crds_and_manifests_install_applies(wheel: Path, tmp_path: Path) -> None:  # noqa: F811
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    for path in [*(ROOT / "crds").glob("*.yaml"), *(ROOT / "manifests").glob("*.yaml")]:
        assert f"operators/cli/bundled/{path.parent.name}/{path.name}" in names, path

    # Installed (unpacked) away from the checkout: the same stream, read from the package alone.
    code = (
        "import sys; sys.argv = ['sluice', 'install', '--dry-run']; import operators; "
        f"assert operators.__file__.startswith({str(tmp_path)!r}), operators.__file__; "
        "from operators.cli import main; sys.exit(main())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == bundle.to_yaml(bundle.install_objects())
