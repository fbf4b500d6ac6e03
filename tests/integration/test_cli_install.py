"""`sluice install` and `sluice uninstall` in-process against the real sandbox API server.

The sandbox plays the cluster: it serves every kind the manifests use, applies server-side, marks
CRDs Established, and its workload simulator runs the operator Deployment's pods (no operator
process: the image is never pulled), so the Deployment becomes Available as in a cluster.
What is checked is what the commands leave in the API server, the requests they send (the
sandbox's request log) and what they print.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from operators.cli.bundle import crd_objects, install_objects, manifest_objects
from operators.foundation.cluster import KubeError, object_path
from operators.foundation.keys import ObjectKey, key_of
from operators.webhook.server import publish_ca_bundle
from sluice_sandbox.apiserver import SandboxThread
from tests.cli import run_cli
from tests.harness import Harness

NAMESPACE = "sluice-system"
OPERATOR = ObjectKey("apps/v1", "Deployment", NAMESPACE, "sluice-operator")
USER_AGENT = "sluice-install/"


@pytest.fixture
def harness(sandbox_api: SandboxThread) -> Harness:
    harness = Harness(sandbox_api.kubeconfig)
    probe = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apply-probe"}}
    try:  # a dry run: nothing is written
        harness.cluster.request(
            "PATCH",
            object_path(key_of(probe)),
            probe,
            "application/apply-patch+yaml",
            query={"fieldManager": "probe", "dryRun": "All"},
        )
    except KubeError as error:
        if error.status == 415:
            pytest.skip(f"the sandbox does not serve server-side apply: {error.message}")
        raise
    return harness


Sluice = Callable[..., tuple[int, str, str]]


@pytest.fixture
def sluice(harness: Harness, capsys: pytest.CaptureFixture[str]) -> Sluice:
    """`sluice ARGV... --kubeconfig <the sandbox's>` in-process: (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        return run_cli(capsys, *argv, "--kubeconfig", str(harness.kubeconfig))

    return run


def contains(live: Any, wanted: Any) -> bool:
    """Whether ``live`` holds everything in ``wanted`` (the server may have added defaults)."""
    if isinstance(wanted, Mapping):
        return isinstance(live, Mapping) and all(
            k in live and contains(live[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return isinstance(live, list) and len(live) == len(wanted) and all(map(contains, live, wanted))
    return bool(live == wanted)


def sets_fields(obj: Mapping[str, Any]) -> bool:
    """Whether applying ``obj`` sets any field beyond its identity (apiVersion, kind, name, namespace)."""
    return bool(set(obj) - {"apiVersion", "kind", "metadata"} or set(obj["metadata"]) - {"name", "namespace"})


def live_objects(harness: Harness) -> dict[ObjectKey, dict[str, Any] | None]:
    return {key_of(obj): harness.get(key_of(obj)) for obj in install_objects()}


def progress_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if " ... " in line and " ... waiting: " not in line]


# ---- install -----------------------------------------------------------------------------------------


def test_install_applies_every_object_and_returns_once_the_operator_is_available(
    harness: Harness, sluice: Sluice, sandbox_api: SandboxThread
) -> None:
    assert all(live is None for live in live_objects(harness).values())
    started = time.monotonic()

    code, out, err = sluice("install")
    finished = time.monotonic()
    assert code == 0, err
    assert out == ""
    for obj in install_objects():
        live = harness.get(key_of(obj))
        assert live is not None, key_of(obj)
        assert contains(live, obj), f"{key_of(obj)} is not as in the manifests"
        managers = {(m["manager"], m["operation"]) for m in live["metadata"].get("managedFields") or []}
        # A manager owning no fields gets no entry: the ServiceAccount sets only its name.
        assert (("sluice-install", "Apply") in managers) == sets_fields(obj), managers

    # It returned only once the Deployment was available: read right after, it is.
    operator = harness.read(OPERATOR)
    assert operator["status"]["observedGeneration"] == operator["metadata"]["generation"]
    assert operator["status"]["availableReplicas"] == operator["status"]["updatedReplicas"] == 2
    lines = progress_lines(err)
    assert len(lines) == len(install_objects()), err
    assert lines[:6] == [
        "crd applications.sluice.dev ... established",
        "crd clustermetrictemplates.sluice.dev ... established",
        "crd metrictemplates.sluice.dev ... established",
        "crd rollouts.sluice.dev ... established",
        "crd sidecarsets.sluice.dev ... established",
        "namespace sluice-system ... active",
    ]
    assert lines[-1] == "deployment sluice-system/sluice-operator ... available (2/2)"
    assert "clusterrolebinding sluice-operator ... applied" in lines

    # Every write was a server-side apply by sluice-install; the rest were reads while waiting.
    sent = sandbox_api.server.requests.snapshot(since=started, until=finished)
    assert {r.method for r in sent} == {"PATCH", "GET"}
    assert all(r.user_agent.startswith(USER_AGENT) for r in sent)
    patches = [r for r in sent if r.method == "PATCH"]
    assert len(patches) == len(install_objects())
    assert all("fieldManager=sluice-install" in r.query and "force=true" in r.query for r in patches)


def test_install_again_changes_nothing_and_an_image_upgrades_in_place(
    harness: Harness, sluice: Sluice
) -> None:
    assert sluice("install")[0] == 0
    before = live_objects(harness)

    code, _, err = sluice("install")
    assert code == 0, err
    after = live_objects(harness)
    changed = [key for key in before if before[key] != after[key]]
    assert changed == [], "an install of the same manifests is a no-op"

    code, _, err = sluice("install", "--image", "registry.example.com/sluice:0.2.0")
    assert code == 0, err
    upgraded = live_objects(harness)
    assert [key for key in after if after[key] != upgraded[key]] == [OPERATOR], "only the Deployment changes"
    operator = harness.read(OPERATOR)
    assert operator["metadata"]["generation"] == (before[OPERATOR] or {})["metadata"]["generation"] + 1
    assert [c["image"] for c in operator["spec"]["template"]["spec"]["containers"]] == [
        "registry.example.com/sluice:0.2.0"
    ]
    assert operator["status"]["observedGeneration"] == operator["metadata"]["generation"], "rolled out"
    assert operator["status"]["updatedReplicas"] == operator["status"]["availableReplicas"] == 2


def test_install_takes_over_fields_set_by_hand_and_keeps_what_others_own(
    harness: Harness, sluice: Sluice
) -> None:
    assert sluice("install")[0] == 0
    # Someone scales the operator by hand, and the operator writes the webhook's caBundle.
    harness.cluster.merge_patch(OPERATOR, {"spec": {"replicas": 3}})
    webhook = ObjectKey(
        "admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "", "sluice-sidecar-injector"
    )
    assert publish_ca_bundle(harness.cluster, webhook.name, "Q0E=")

    code, _, err = sluice("install")
    assert code == 0, err
    assert harness.read(OPERATOR)["spec"]["replicas"] == 2, "install owns the replica count (force)"
    assert harness.read(webhook)["webhooks"][0]["clientConfig"]["caBundle"] == "Q0E=", (
        "the operator's CA bundle survives a re-install: install never applied that field"
    )


def test_install_times_out_naming_the_part_that_is_not_ready(harness: Harness, sluice: Sluice) -> None:
    # A Deployment whose pods never get ready (the sandbox's annotation), created by someone else
    # before: install's apply keeps the annotation it does not own, so the operator never starts.
    harness.ensure_namespace(NAMESPACE)
    (manifest,) = [obj for obj in manifest_objects() if key_of(obj) == OPERATOR]
    manifest["spec"]["template"]["metadata"]["annotations"] = {"sandbox.sluice.dev/ready": "false"}
    harness.cluster.create(manifest)

    code, _, err = sluice("install", "--timeout", "2s")
    assert code == 1
    assert err.splitlines()[-1] == (
        "sluice install: timed out after 2s: deployment sluice-system/sluice-operator is not ready: "
        "0 of 2 replicas available: Deployment does not have minimum availability."
    )
    assert "mutatingwebhookconfiguration sluice-sidecar-injector ... applied" in err, "the rest is applied"


def test_install_no_wait_applies_and_returns_at_once(
    harness: Harness, sluice: Sluice, sandbox_api: SandboxThread
) -> None:
    started = time.monotonic()
    code, _, err = sluice("install", "--no-wait")
    finished = time.monotonic()
    assert code == 0, err
    assert "deployment sluice-system/sluice-operator ... applied" in err
    sent = sandbox_api.server.requests.snapshot(since=started, until=finished)
    assert [r.method for r in sent] == ["PATCH"] * len(install_objects()), "no reads: nothing waited for"


def test_dry_run_prints_the_stream_and_sends_nothing(
    harness: Harness, sluice: Sluice, sandbox_api: SandboxThread
) -> None:
    started = time.monotonic()
    code, out, err = sluice("install", "--dry-run")
    assert (code, err) == (0, "")
    assert out.count("\n---\n") == len(install_objects()) - 1
    code, out, err = sluice("uninstall", "--dry-run", "--crds")
    assert code == 0
    assert len(out.splitlines()) == len(install_objects())
    assert sandbox_api.server.requests.count(since=started) == 0, "not a single request"


# ---- uninstall ---------------------------------------------------------------------------------------


def test_uninstall_removes_everything_but_the_crds_and_they_go_only_with_crds(
    harness: Harness, sluice: Sluice
) -> None:
    assert sluice("install")[0] == 0

    code, _, err = sluice("uninstall")
    assert code == 0, err
    assert "kept the CRDs" in err
    left = {key for key, live in live_objects(harness).items() if live is not None}
    assert left == {key_of(crd) for crd in crd_objects()}
    assert harness.get(ObjectKey("v1", "Namespace", "", NAMESPACE)) is None
    assert "namespace sluice-system ... deleted" in progress_lines(err)

    code, _, err = sluice("uninstall", "--crds")
    assert code == 0, err
    assert all(live is None for live in live_objects(harness).values())
    lines = progress_lines(err)
    crds = len(crd_objects())
    assert lines[:crds] == [f"crd {crd['metadata']['name']} ... deleted" for crd in crd_objects()]
    rest = lines[crds:]
    assert rest == [f"{line.split(' ... ')[0]} ... not found" for line in rest], "gone already"

    code, _, err = sluice("uninstall", "--crds")
    assert code == 0, "nothing left to delete is fine"
    assert all(line.endswith(" ... not found") for line in progress_lines(err))
