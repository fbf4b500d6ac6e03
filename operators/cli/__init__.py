"""The `sluice` command (also installed as `kubectl-sluice`, so `kubectl sluice ...` works)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import urllib3
from kubernetes.config import ConfigException

from operators.cli import crds, dashboard, get, install, lint, plugins, release, run, verbs
from operators.foundation.cluster import KubeError

DESCRIPTION = """\
Sluice: progressive delivery for Kubernetes. Releases shift traffic to a new
version in steps, advance only while Prometheus says it meets its SLOs, and
roll back at once when it does not.
"""

EPILOG = """\
examples:
  sluice demo
  sluice sandbox
  sluice install --context my-cluster
  sluice run --all-namespaces --prometheus-url http://prometheus.monitoring:9090
  kubectl sluice status web --watch
  kubectl sluice promote web
  sluice dashboard --port 3100
  kubectl sluice get web
  kubectl sluice set image web web=ghcr.io/acme/web:1.5
  kubectl sluice undo web
  sluice crds --output-dir crds/
  sluice lint rollout.yaml
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run.add_parser(commands)
    crds.add_parser(commands)
    lint.add_parser(commands)
    install.add_parsers(commands)
    get.add_parsers(commands)
    release.add_parsers(commands)
    dashboard.add_parser(commands)
    verbs.add_parsers(commands)
    plugins.add_parsers(commands)  # `sluice sandbox` and `sluice demo`, from sluice-sandbox
    return parser


def _drop_routine_success(record: logging.LogRecord) -> bool:
    """kopf logs each handler's success at INFO: a line per watch event on every object, which
    at a thousand Rollouts is most of the log and a good part of the CPU. Failures still show."""
    return not (record.levelno == logging.INFO and record.getMessage().endswith(" succeeded."))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # its retry warnings repeat what our one-line error says
        logging.getLogger("urllib3").setLevel(logging.ERROR)
        logging.getLogger("kopf.objects").addFilter(_drop_routine_success)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    except (KubeError, ConfigException, OSError, urllib3.exceptions.HTTPError) as error:
        # The cluster is unreachable, the kubeconfig is wrong, a CRD is missing: say so, no traceback.
        print(f"sluice {args.command}: {describe_error(error)}", file=sys.stderr)
        return 1
    return code


def describe_error(error: BaseException) -> str:
    if isinstance(error, KubeError) and error.status == 404:
        return f"{error.message} (are the Sluice CRDs installed? kubectl apply -f crds/)"
    if isinstance(error, KubeError):
        return error.message
    if isinstance(error, urllib3.exceptions.MaxRetryError):
        return f"cannot reach the Kubernetes API server: {error.reason}"
    return str(error) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
