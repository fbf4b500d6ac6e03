"""`sluice sandbox` and `sluice demo`: Sluice at work with no cluster at all.

`sluice` finds these two through the entry-point group `sluice.commands` (see sandbox/pyproject.toml
and operators/cli/plugins.py): each `add_*_parser` adds its command to `sluice`'s subcommands. This
module is imported for every `sluice` invocation, so it imports the sandbox itself only when one of
its commands runs.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from operators.cli.run import add_metric_hosts_argument

if TYPE_CHECKING:
    from sluice_sandbox.environment import Sandbox, SandboxOptions

# Where `sluice sandbox` writes its kubeconfig, relative to where it runs.
DEFAULT_KUBECONFIG = Path(".sluice/sandbox.kubeconfig")


def add_sandbox_parser(commands: Any) -> None:
    sandbox = commands.add_parser(
        "sandbox",
        help="run a Kubernetes API, Prometheus and the operator on loopback, until interrupted",
        description="Start, on loopback, everything a release needs: an API server with the Sluice CRDs "
        "and HTTPRoute, simulated pods and traffic, a real Prometheus, and the Sluice operator. The real "
        "kubectl works against it through the kubeconfig it writes.",
    )
    _common(sandbox)
    sandbox.add_argument("--port", type=int, default=0, help="API server port (default: any free port)")
    sandbox.add_argument("--no-operator", action="store_true", help="do not run the operator (run your own)")
    sandbox.add_argument(
        "--crds",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="also serve every CustomResourceDefinition in the YAML files under DIR (repeatable); one "
        "named as a built-in replaces it: --crds ../shared/reference serves the upstream HTTPRoute, "
        "its schema and CEL rules enforced, instead of a permissive one",
    )
    sandbox.set_defaults(handler=handle_sandbox)


def add_demo_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="release a good version and a bad one in the sandbox, live",
        description="Start the sandbox, deploy examples/demo/, release a good version (promoted) and a bad "
        "one (rolled back), and show each step and analysis check. Exits 0 only when both went as they "
        "should and the stable version served throughout.",
    )
    _common(demo)
    demo.add_argument(
        "--manifests", type=Path, metavar="DIR", help="the demo manifests (default: examples/demo)"
    )
    demo.set_defaults(handler=handle_demo)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=DEFAULT_KUBECONFIG,
        help=f"write the kubeconfig here ({DEFAULT_KUBECONFIG})",
    )
    parser.add_argument("--prometheus-url", metavar="URL", help="use this Prometheus instead of starting one")
    add_metric_hosts_argument(parser)
    parser.add_argument(
        "--ready-delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how long simulated pods take to get ready",
    )
    parser.add_argument(
        "--stop-delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how long deleted pods take to stop (serving meanwhile), at most their grace period",
    )
    parser.add_argument(
        "--header",
        default="x-canary=always",
        metavar="NAME=VALUE",
        help="the header a share of the simulated requests carries, for header routes (x-canary=always)",
    )
    parser.add_argument(
        "--header-share",
        type=float,
        default=0.1,
        metavar="FRACTION",
        help="the share of the simulated requests that carry --header (0.1)",
    )


def _options(args: argparse.Namespace, **extra: Any) -> SandboxOptions:
    # Imported here: the sandbox pulls in the API server and simulators, which
    # `sluice status` and friends should not pay for at start-up.
    from sluice_sandbox.environment import SandboxOptions
    from sluice_sandbox.traffic import MarkedRequests

    header, _, value = str(args.header).partition("=")
    if not header or not value:
        raise SystemExit(f"sluice: --header must be NAME=VALUE, not {args.header!r}")
    if not 0.0 <= args.header_share <= 1.0:
        raise SystemExit(f"sluice: --header-share must be between 0 and 1, not {args.header_share}")
    return SandboxOptions(
        marked=MarkedRequests(header, value, args.header_share),
        kubeconfig=args.kubeconfig,
        prometheus_url=args.prometheus_url,
        metric_hosts=[str(host) for host in args.metric_hosts],
        ready_delay=args.ready_delay,
        stop_delay=args.stop_delay,
        **extra,
    )


def _quiet(args: argparse.Namespace) -> None:
    """The sandbox's own output is the point; the operator's logs only with --verbose."""
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("kopf").setLevel(logging.ERROR)


def _start(options: SandboxOptions) -> Sandbox | None:
    from sluice_sandbox.environment import Sandbox
    from sluice_sandbox.errors import ApiError
    from sluice_sandbox.prometheus import PrometheusError, PrometheusNotInstalled

    try:
        return Sandbox(options).start()
    except PrometheusNotInstalled as error:
        print(f"sluice: {error}", file=sys.stderr)
    except PrometheusError as error:
        print(f"sluice: Prometheus did not start: {error}", file=sys.stderr)
    except ApiError as error:  # a CRD of --crds that the API server refuses, as a cluster would
        print(f"sluice: --crds: {error.message}", file=sys.stderr)
    return None


class CrdFilesError(Exception):
    """A --crds directory that is missing, holds unreadable YAML, or no CRD at all."""


def read_crds(directories: Sequence[Path]) -> list[dict[str, Any]]:
    """The CustomResourceDefinitions in the YAML files under the directories, in path order."""
    crds: list[dict[str, Any]] = []
    for directory in directories:
        if not directory.is_dir():
            raise CrdFilesError(f"--crds {directory}: no such directory")
        found = 0
        for path in sorted([*directory.rglob("*.yaml"), *directory.rglob("*.yml")]):
            try:
                documents = list(yaml.safe_load_all(path.read_text()))
            except (OSError, yaml.YAMLError) as error:
                raise CrdFilesError(f"--crds {directory}: {path}: {error}") from None
            selected = custom_resource_definitions(documents)
            crds.extend(selected)
            found += len(selected)
        if not found:
            raise CrdFilesError(f"--crds {directory}: no CustomResourceDefinition in its YAML files")
    return crds


def custom_resource_definitions(documents: Sequence[Any]) -> list[dict[str, Any]]:
    """The documents that are CRDs (of apiextensions.k8s.io/v1, the one version the sandbox serves)."""
    return [
        document
        for document in documents
        if isinstance(document, dict)
        and document.get("kind") == "CustomResourceDefinition"
        and document.get("apiVersion") == "apiextensions.k8s.io/v1"
    ]


def handle_sandbox(args: argparse.Namespace) -> int:
    _quiet(args)
    try:
        crds = read_crds(args.crds)
    except CrdFilesError as error:
        print(f"sluice: {error}", file=sys.stderr)
        return 2
    sandbox = _start(_options(args, api_port=args.port, run_operator=not args.no_operator, crds=crds))
    if sandbox is None:
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        assert sandbox.api is not None
        print(
            f"Sluice sandbox is running.\n"
            f"  API server:  {sandbox.api.url}\n"
            f"  kubeconfig:  {args.kubeconfig}\n"
            f"  Prometheus:  {sandbox.prometheus_url}\n"
            f"  operator:    {'running' if sandbox.operator else 'not started (--no-operator)'}\n"
            + (f"  its metrics: {sandbox.operator_metrics_url}\n" if sandbox.operator_metrics_url else "")
            + f"{_served_crds(crds)}\n"
            f"Try:\n"
            f"  export KUBECONFIG={args.kubeconfig}\n"
            f"  kubectl apply -f examples/demo/\n"
            f"  kubectl get rollouts -n demo\n\n"
            f"Press Ctrl-C to stop.",
            flush=True,
        )
        stop.wait()
    finally:
        sandbox.stop()
    return 0


def _served_crds(crds: Sequence[Mapping[str, Any]]) -> str:
    names = ", ".join(crd["spec"]["names"]["kind"] for crd in crds)
    return f"  --crds:      {names}\n" if crds else ""


def handle_demo(args: argparse.Namespace) -> int:
    from sluice_sandbox.demo import Demo, summary

    _quiet(args)
    sandbox = _start(_options(args))
    if sandbox is None:
        return 2
    try:
        demo = Demo(sandbox, sys.stdout, args.manifests)
        demo.say("sandbox started: API server, simulated pods and traffic, Prometheus, the Sluice operator")
        report = demo.run()
    except (TimeoutError, OSError) as error:
        print(f"sluice demo: {error}", file=sys.stderr)
        return 1
    finally:
        sandbox.stop()
    print(summary(report))
    passed, _ = report.verdict()
    return 0 if passed else 1
