"""`sluice lint FILE...`: check Sluice manifests offline, before they reach a cluster.

For CI and pre-commit: no cluster, no kubeconfig. Every YAML document of the
files (and of the YAML files under a directory) that is a Sluice object is
checked against the API models the CRDs are generated from (`schema`); a
Rollout's metric queries are rendered and parsed (`queries`), and its spec is
checked for releases that cannot do what was meant (`sanity`). Other kinds are
skipped with a note.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from operators.analysis.template_lookup import TemplateCatalog
from operators.api.metrictemplate import CLUSTER_KIND as CLUSTER_TEMPLATE_KIND
from operators.api.metrictemplate import KIND as TEMPLATE_KIND
from operators.api.rollout import KIND as ROLLOUT_KIND
from operators.api.rollout import RolloutSpec
from operators.cli.lint.documents import Document, Finding, Severity, UnreadableFile, read_documents
from operators.cli.lint.queries import check_queries
from operators.cli.lint.sanity import sanity_issues
from operators.cli.lint.schema import Checked, check_object

DESCRIPTION = """\
Check Sluice manifests (Rollout, Application, SidecarSet, MetricTemplate,
ClusterMetricTemplate) offline, without a cluster:

  - schema: the fields, types, bounds and rules of the CRDs (from the same
    models the CRDs are generated from);
  - queries: each metric's query rendered by the operator's sandboxed template
    renderer (templates from MetricTemplates in the same files, or built in),
    and a Prometheus query parsed as PromQL;
  - sanity: a canary step at 100% before any analysis check could run, timed
    pauses with no analysis at all, thresholds no value can meet.

Messages read FILE:LINE: error|warning|note: what. Other kinds are skipped
with a note. A directory means the *.yaml and *.yml files under it.
Exit status: 0 when there is no error (warnings allowed), 1 on errors,
2 when a file cannot be read.
"""

EPILOG = """\
examples:
  sluice lint rollout.yaml
  kubectl sluice lint deploy/*.yaml
  sluice lint --quiet manifests/
  sluice lint --strict rollout.yaml      # warnings fail too
"""

USAGE_ERROR = 2
YAML_SUFFIXES = (".yaml", ".yml")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "lint",
        help="check Sluice manifests offline (schema, queries, sanity)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="YAML files, or directories of them")
    parser.add_argument("-q", "--quiet", action="store_true", help="leave out notes (skipped kinds)")
    parser.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        files = expand_paths(Path(name) for name in args.files)
    except FileNotFoundError as missing:
        print(f"sluice lint: {missing}", file=sys.stderr)
        return USAGE_ERROR
    try:
        findings = lint_files(files)
    except OSError as error:  # unreadable (permissions, not UTF-8 is a ValueError below)
        print(f"sluice lint: {error}", file=sys.stderr)
        return USAGE_ERROR
    shown = [f for f in findings if not (args.quiet and f.severity == Severity.NOTE)]
    for finding in shown:
        print(finding)
    errors = sum(f.severity == Severity.ERROR for f in findings)
    warnings = sum(f.severity == Severity.WARNING for f in findings)
    print(f"{len(files)} files: {errors} errors, {warnings} warnings", file=sys.stderr)
    return 1 if errors or (args.strict and warnings) else 0


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """The files named and the YAML files under the directories named; FileNotFoundError if one is missing."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in YAML_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return files


def lint_files(files: Sequence[Path]) -> list[Finding]:
    """Every finding of the files, in file and line order. Templates are shared across the files."""
    findings: list[Finding] = []
    checked: list[tuple[Document, Checked | None]] = []
    for path in files:
        try:
            documents = list(read_documents(path))
        except UnreadableFile as unreadable:
            findings.append(unreadable.finding)
            continue
        except UnicodeDecodeError as error:
            findings.append(Finding(str(path), 1, Severity.ERROR, f"not UTF-8 text: {error.reason}"))
            continue
        for document in documents:
            valid, problems = check_object(document)
            findings += problems
            checked.append((document, valid))
    catalog = template_catalog(document.data for document, valid in checked if valid is not None)
    user_templates = frozenset(catalog.cluster) | {name for _, name in catalog.namespaced}
    for document, valid in checked:
        if valid is None or valid.kind != ROLLOUT_KIND or not isinstance(valid.spec, RolloutSpec):
            continue
        findings += check_queries(document, valid.name, valid.namespace, valid.spec, catalog)
        for issue in sanity_issues(valid.spec, user_templates):
            findings.append(document.finding(issue.path, issue.severity, issue.message))
    order = {str(path): index for index, path in enumerate(files)}
    return sorted(findings, key=lambda f: (order.get(f.file, 0), f.line))


def template_catalog(objects: Iterable[Any]) -> TemplateCatalog:
    """The MetricTemplates and ClusterMetricTemplates among the (valid) objects."""
    objects = list(objects)
    namespaced = [
        {**body, "metadata": {"namespace": "default", **body["metadata"]}}
        for body in objects
        if body.get("kind") == TEMPLATE_KIND
    ]
    cluster = [body for body in objects if body.get("kind") == CLUSTER_TEMPLATE_KIND]
    return TemplateCatalog.of(namespaced, cluster)
