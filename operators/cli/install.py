"""`sluice install` and `sluice uninstall`: Sluice in the cluster of the current kubeconfig, or out of it.

Install applies the bundle (bundle.py: the CRDs, then manifests/ as kustomize renders it) with
server-side apply under one field manager, so running it again is a no-op and a newer sluice
upgrades in place, and waits for each part to be ready (readiness.py) before the parts that need
it: the CRDs, then the namespace, then the rest, then the operator Deployment. The webhook needs
nothing from install: the operator makes its certificate and writes the CA into the webhook
configuration itself (operators/webhook/server.py).

Uninstall deletes the same objects in the reverse order, the CRDs only when asked to (and first,
while the operator still runs to clear its finalizers from the Rollouts that go with them).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any

from operators.cli.bundle import CRD_KIND, crd_objects, install_objects, manifest_objects, to_yaml
from operators.cli.kustomize import KustomizeError
from operators.cli.readiness import Readiness, deletion_state, describe, readiness
from operators.foundation.cluster import Cluster, KubeError, load_api_client, object_path
from operators.foundation.keys import key_of

FIELD_MANAGER = "sluice-install"
DEFAULT_TIMEOUT = 120.0
POLL_SECONDS = 0.5  # between reads of a part not ready yet

INSTALL_EPILOG = """\
examples:
  sluice install                                   # into the current kubeconfig context
  sluice install --context prod --image registry.example.com/sluice:0.1.0
  sluice install --dry-run > sluice.yaml           # for a GitOps repository: what would be applied

Running it again is safe: it applies the same objects (server-side apply, field manager
sluice-install) and changes only what differs, which is also how a newer sluice upgrades.
Exit status: 0 once every part is ready, 1 when a request fails or a part is not ready in time
(the message names it and says why).
"""

UNINSTALL_EPILOG = """\
examples:
  sluice uninstall                  # the operator, webhook, RBAC and namespace; the CRDs stay
  sluice uninstall --crds           # also the CRDs: every Rollout, Application and SidecarSet goes
  sluice uninstall --crds --dry-run # list what would be deleted

Parts already gone are skipped, so running it again is safe.
"""

CRDS_KEPT = (
    "kept the CRDs, and with them every Rollout, Application and SidecarSet (pass --crds to delete them)"
)


def add_parsers(commands: Any) -> None:
    install = commands.add_parser(
        "install",
        help="install Sluice into the cluster",
        description="Install Sluice into the cluster of the current kubeconfig context: the CRDs, the\n"
        "sluice-system namespace, RBAC, the operator Deployment and the SidecarSet webhook,\n"
        "waiting for each part to be ready (the CRDs Established, the Deployment Available).",
        epilog=INSTALL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _connection_arguments(install)
    install.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be applied, as one multi-document YAML stream, and send nothing",
    )
    install.add_argument(
        "--image",
        type=_image,
        metavar="IMAGE",
        help="the operator's image (default: the one in the manifests this sluice ships; --dry-run shows it)",
    )
    _wait_arguments(install, "ready")
    install.set_defaults(handler=handle_install)

    uninstall = commands.add_parser(
        "uninstall",
        help="remove Sluice from the cluster",
        description="Remove Sluice from the cluster of the current kubeconfig context: the webhook\n"
        "configuration, the operator, RBAC and the sluice-system namespace, waiting until they\n"
        "are gone. The CRDs stay unless --crds is given: deleting them deletes every Rollout.",
        epilog=UNINSTALL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _connection_arguments(uninstall)
    uninstall.add_argument(
        "--crds",
        action="store_true",
        help="also delete the CRDs, and with them EVERY Rollout, Application and SidecarSet in the "
        "cluster (and the Deployments, Services and HTTPRoutes they own)",
    )
    uninstall.add_argument(
        "--dry-run", action="store_true", help="list what would be deleted, and send nothing"
    )
    _wait_arguments(uninstall, "gone")
    uninstall.set_defaults(handler=handle_uninstall)


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig", metavar="PATH", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
    )
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")


def _wait_arguments(parser: argparse.ArgumentParser, until: str) -> None:
    parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"wait until each part is {until} (default: wait)",
    )
    parser.add_argument(
        "--timeout",
        type=duration,
        default=DEFAULT_TIMEOUT,
        metavar="DURATION",
        help=f"give up waiting after this long, e.g. 90, 90s or 5m (default: {DEFAULT_TIMEOUT:g}s)",
    )


_DURATION = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(s|m)?$")


def duration(text: str) -> float:
    """Seconds from ``120``, ``120s`` or ``2m`` (positive)."""
    match = _DURATION.match(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: a positive number of seconds, or e.g. 90s, 2m"
        )
    return float(match.group(1)) * (60 if match.group(2) == "m" else 1)


def _image(text: str) -> str:
    if not text or text != text.strip() or any(char.isspace() for char in text):
        raise argparse.ArgumentTypeError(f"invalid image {text!r}: an image reference has no spaces")
    return text


# ----- What install and uninstall do, and in what order (pure) -----


def install_phases(objects: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """The objects in groups, each ready before the next is applied: the CRDs (nothing can use
    their kinds before), the namespaces (nothing can be created in them before), everything else."""
    crds = [obj for obj in objects if obj.get("kind") == CRD_KIND]
    namespaces = [obj for obj in objects if obj.get("kind") == "Namespace"]
    rest = [obj for obj in objects if obj.get("kind") not in (CRD_KIND, "Namespace")]
    return [phase for phase in (crds, namespaces, rest) if phase]


def uninstall_phases(
    crds: Sequence[Mapping[str, Any]], manifests: Sequence[Mapping[str, Any]]
) -> list[list[Mapping[str, Any]]]:
    """The objects to delete in groups, each gone before the next: the CRDs given (first, so that the
    operator still runs to clear its finalizers from the objects that go with them), then the
    manifests' objects, the webhook configuration first and the namespace last."""
    return [phase for phase in (list(crds), list(reversed(manifests))) if phase]


# ----- Talking to the cluster -----


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic()
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def passed(self) -> bool:
        return time.monotonic() >= self.at


class NotReady(Exception):
    """A part is not ready (or not gone) by the deadline; the message names it and says why."""


class PartFailed(Exception):
    """A request about one part failed; the message names the part and gives the server's words."""


def progress(part: Mapping[str, Any], state: str) -> None:
    print(f"{describe(part)} ... {state}", file=sys.stderr, flush=True)


def connect(args: argparse.Namespace, command: str) -> Cluster:
    api = load_api_client(args.kubeconfig, args.context)
    api.user_agent = f"sluice-{command}/{package_version('sluice')}"  # shows in audit logs
    return Cluster(api)


def apply(cluster: Cluster, obj: Mapping[str, Any]) -> dict[str, Any]:
    """Server-side apply: creates or updates, owning exactly the fields given (force: take over
    fields someone else set, e.g. with an earlier `kubectl apply`)."""
    return cluster.apply(obj, field_manager=FIELD_MANAGER)


def wait_until(
    cluster: Cluster,
    part: Mapping[str, Any],
    live: Mapping[str, Any] | None,
    decide: Callable[[Mapping[str, Any] | None], Readiness],
    deadline: Deadline,
    goal: str = "ready",
) -> Readiness:
    """Read ``part`` until ``decide`` says it is ready, printing each new state on the way; raises
    NotReady at the deadline. ``live``: the object as last seen (None: not there)."""
    shown = ""
    while True:
        verdict = decide(live)
        if verdict.ready:
            return verdict
        if deadline.passed():
            raise NotReady(
                f"timed out after {deadline.seconds:g}s: {describe(part)} is not {goal}: {verdict.state}"
            )
        if verdict.state != shown:
            progress(part, f"waiting: {verdict.state}")
            shown = verdict.state
        time.sleep(POLL_SECONDS)  # polling the API server between reads, not waiting for a result
        live = cluster.get(key_of(part))


def _applied_readiness(live: Mapping[str, Any] | None) -> Readiness:
    return readiness(live) if live is not None else Readiness(False, "it does not exist")


def _gone(live: Mapping[str, Any] | None) -> Readiness:
    return Readiness(True, "deleted") if live is None else Readiness(False, deletion_state(live))


def handle_install(args: argparse.Namespace) -> int:
    try:
        objects = install_objects(args.image)
    except (KustomizeError, OSError) as error:
        print(f"sluice install: the bundled manifests cannot be read: {error}", file=sys.stderr)
        return 1
    if args.dry_run:
        sys.stdout.write(to_yaml(objects))
        return 0
    cluster = connect(args, "install")
    deadline = Deadline.after(args.timeout)
    try:
        for phase in install_phases(objects):
            pending = []  # applied, not ready yet: waited for once the whole phase is applied
            for part in phase:
                live = _apply_part(cluster, part)
                verdict = readiness(live)
                if verdict.ready or not args.wait:
                    progress(part, verdict.state if verdict.ready else "applied")
                else:
                    pending.append((part, live))
            for part, live in pending:
                progress(part, wait_until(cluster, part, live, _applied_readiness, deadline).state)
    except (NotReady, PartFailed) as error:
        print(f"sluice install: {error}", file=sys.stderr)
        return 1
    return 0


def _apply_part(cluster: Cluster, part: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return apply(cluster, part)
    except KubeError as error:
        raise PartFailed(f"{describe(part)}: {error.message}") from error


def handle_uninstall(args: argparse.Namespace) -> int:
    try:
        phases = uninstall_phases(crd_objects() if args.crds else [], manifest_objects())
    except (KustomizeError, OSError) as error:
        print(f"sluice uninstall: the bundled manifests cannot be read: {error}", file=sys.stderr)
        return 1
    if args.dry_run:
        for part in (part for phase in phases for part in phase):
            print(f"would delete {describe(part)}")
    if not args.crds:
        print(f"sluice uninstall: {CRDS_KEPT}", file=sys.stderr)
    if args.dry_run:
        return 0
    cluster = connect(args, "uninstall")
    deadline = Deadline.after(args.timeout)
    try:
        for phase in phases:
            deleted = [part for part in phase if _delete_part(cluster, part)]
            for part in deleted:
                if args.wait:
                    progress(
                        part,
                        wait_until(cluster, part, cluster.get(key_of(part)), _gone, deadline, "gone").state,
                    )
                else:
                    progress(part, "deletion requested")
    except (NotReady, PartFailed) as error:
        print(f"sluice uninstall: {error}", file=sys.stderr)
        return 1
    return 0


def _delete_part(cluster: Cluster, part: Mapping[str, Any]) -> bool:
    """Delete ``part``; False when it was not there."""
    try:
        cluster.request("DELETE", object_path(key_of(part)))
    except KubeError as error:
        if error.status == 404:  # gone already, or its kind is not even served (CRDs deleted)
            progress(part, "not found")
            return False
        raise PartFailed(f"{describe(part)}: {error.message}") from error
    return True
