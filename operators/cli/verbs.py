"""`sluice pause|resume|history|undo|set image`: steer a Rollout by changing its spec, as kubectl would.

Each is one request to the API server; the operator does the rest, exactly as for the same
change made with kubectl or GitOps: a new template goes through the canary steps and analysis.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from operators.cli.kubeargs import add_connection_args, connect
from operators.foundation.cluster import Cluster, KubeError, object_path
from operators.rollout.inventory import rollout_key
from operators.rollout.ownership import REVISION_LABEL, ROLLOUT_LABEL
from operators.rollout.revisions import API_VERSION as REVISION_API_VERSION
from operators.rollout.revisions import KIND as REVISION_KIND
from operators.rollout.revisions import recorded_template
from operators.sidecarset.inject import without_sidecars

JSON_PATCH = "application/json-patch+json"
USAGE = 2


def add_parsers(commands: Any) -> None:
    for name, paused, text in (
        ("pause", True, "hold the release at its current step (spec.paused: true)"),
        ("resume", False, "go on with a paused release (spec.paused: false)"),
    ):
        parser = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        _target(parser)
        parser.set_defaults(handler=handle_pause, paused=paused)
    history = commands.add_parser(
        "history",
        help="list the revisions a Rollout can be undone to",
        description="List the revisions Sluice keeps of a Rollout (ControllerRevisions), oldest first, "
        "numbered for `sluice undo --to-revision N`.",
    )
    _target(history)
    history.set_defaults(handler=handle_history)
    undo = commands.add_parser(
        "undo",
        help="release a previous revision again",
        description="Release a previous revision again, through the same canary steps and analysis: "
        "spec.template is set to that revision's recorded template.",
    )
    _target(undo)
    undo.add_argument(
        "--to-revision",
        type=int,
        metavar="N",
        help="the revision number from `sluice history` (default: the one before the current)",
    )
    undo.set_defaults(handler=handle_undo)
    setter = commands.add_parser(
        "set", help="change a Rollout's spec", description="Change a Rollout's spec."
    )
    what = setter.add_subparsers(dest="what", metavar="WHAT", required=True)
    image = what.add_parser(
        "image",
        help="release new container images",
        description="Set container images of spec.template: a new revision, released through the canary "
        "steps (like kubectl set image).",
    )
    _target(image)
    image.add_argument("images", nargs="+", metavar="CONTAINER=IMAGE")
    image.set_defaults(handler=handle_set_image)


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the Rollout")
    add_connection_args(parser)


def _fail(what: str, message: str, code: int = 1) -> int:
    print(f"sluice {what}: {message}", file=sys.stderr)
    return code


def handle_pause(args: argparse.Namespace) -> int:
    cluster, namespace = connect(args)
    verb = "pause" if args.paused else "resume"
    try:
        cluster.merge_patch(rollout_key(namespace, args.name), {"spec": {"paused": args.paused}})
    except KubeError as error:
        return _fail(verb, f"{namespace}/{args.name}: {error.message}")
    print(f"rollout {namespace}/{args.name}: {'paused' if args.paused else 'resumed'}")
    return 0


# ---- revisions ------------------------------------------------------------------------------------


def revision_history(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    """The Rollout's ControllerRevisions, oldest first: the list `history` numbers from 1."""
    records = cluster.list_objects(REVISION_API_VERSION, REVISION_KIND, namespace, f"{ROLLOUT_LABEL}={name}")
    return sorted(records, key=_age)


def _age(record: Mapping[str, Any]) -> tuple[int, int, str]:
    """Oldest first. `revision` is the second it was recorded: two recorded in one second (a release
    started right after the first deploy) are ordered by resourceVersion, which is opaque by the API's
    rules but increases with each write on every real API server; good enough to order a listing."""
    version = str(record["metadata"].get("resourceVersion") or "")
    return (
        int(record.get("revision") or 0),
        int(version) if version.isdigit() else 0,
        record["metadata"]["name"],
    )


def revision_of(record: Mapping[str, Any]) -> str:
    return str(((record.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL) or "")


def current_revision(rollout: Mapping[str, Any]) -> str | None:
    """The revision spec.template is: the canary's while one is out (or rolled back), else the stable's."""
    status = rollout.get("status") or {}
    return status.get("canaryRevision") or status.get("stableRevision")


def undo_target(
    records: Sequence[Mapping[str, Any]], current: str | None, number: int | None
) -> tuple[int, Mapping[str, Any]] | str:
    """(number, record) to undo to, or why there is none. Default: the newest other than `current`."""
    if number is not None:
        if not 1 <= number <= len(records):
            return f"no revision {number}: `sluice history` lists 1 to {len(records)}"
        record = records[number - 1]
        if revision_of(record) == current:
            return f"revision {number} ({current}) is the current one: nothing to undo"
        return number, record
    for position in range(len(records), 0, -1):
        if revision_of(records[position - 1]) != current:
            return position, records[position - 1]
    return "no previous revision is recorded"


def images_of(template: Mapping[str, Any] | None) -> str:
    spec = (template or {}).get("spec") or {}
    return ",".join(f"{c.get('name')}={c.get('image')}" for c in spec.get("containers") or [])


def handle_history(args: argparse.Namespace) -> int:
    cluster, namespace = connect(args)
    rollout = cluster.get(rollout_key(namespace, args.name))
    if rollout is None:
        return _fail("history", f"rollout {namespace}/{args.name} not found")
    current = current_revision(rollout)
    print(f"{'NUMBER':<8}{'REVISION':<14}{'CURRENT':<9}IMAGES")
    for number, record in enumerate(revision_history(cluster, namespace, args.name), start=1):
        revision = revision_of(record)
        mark = "*" if revision == current else ""
        print(f"{number:<8}{revision:<14}{mark:<9}{images_of(recorded_template(record))}")
    return 0


def handle_undo(args: argparse.Namespace) -> int:
    cluster, namespace = connect(args)
    rollout = cluster.get(rollout_key(namespace, args.name))
    if rollout is None:
        return _fail("undo", f"rollout {namespace}/{args.name} not found")
    if (rollout.get("spec") or {}).get("workloadRef"):
        return _fail("undo", "this Rollout releases the Deployment in spec.workloadRef: change that instead")
    found = undo_target(
        revision_history(cluster, namespace, args.name), current_revision(rollout), args.to_revision
    )
    if isinstance(found, str):
        return _fail("undo", f"{namespace}/{args.name}: {found}")
    number, record = found
    recorded = recorded_template(record)
    if recorded is None:
        return _fail("undo", f"revision {number} holds no template")
    # The record is the effective template: the SidecarSets' sidecars go, they inject their own.
    template = without_sidecars(recorded)
    # A JSON patch replaces the template whole (a merge patch would keep labels the old one lacks), and
    # tests the resourceVersion read: a change made meanwhile is not silently overwritten.
    patch = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rollout["metadata"]["resourceVersion"]},
        {"op": "replace", "path": "/spec/template", "value": template},
    ]
    try:
        cluster.request("PATCH", _path(namespace, args.name), patch, JSON_PATCH)
    except KubeError as error:
        return _fail("undo", f"{namespace}/{args.name}: {error.message}")
    print(f"rollout {namespace}/{args.name}: releasing revision {number} ({revision_of(record)}) again")
    return 0


# ---- set image ------------------------------------------------------------------------------------


def image_patch(template: Mapping[str, Any], images: Mapping[str, str]) -> list[dict[str, Any]] | str:
    """JSON patch operations setting each container's image, or why not (a container that is not there).

    Each operation is preceded by a test of the container's name at that index, so a template
    changed meanwhile fails the patch instead of getting an image in the wrong container.
    """
    spec = template.get("spec") or {}
    where: dict[str, str] = {}
    for field in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(field) or []):
            where[str(container.get("name"))] = f"/spec/template/spec/{field}/{index}"
    missing = [name for name in images if name not in where]
    if missing:
        return (
            f"no container named {', '.join(missing)} in spec.template; "
            f"the containers are: {', '.join(where) or 'none'}"
        )
    patch: list[dict[str, Any]] = []
    for name, image in images.items():
        patch.append({"op": "test", "path": f"{where[name]}/name", "value": name})
        patch.append({"op": "replace", "path": f"{where[name]}/image", "value": image})
    return patch


def parse_images(pairs: Sequence[str]) -> dict[str, str] | str:
    images: dict[str, str] = {}
    for pair in pairs:
        name, sep, image = pair.partition("=")
        if not sep or not name or not image:
            return f"{pair!r} is not CONTAINER=IMAGE"
        images[name] = image
    return images


def handle_set_image(args: argparse.Namespace) -> int:
    images = parse_images(args.images)
    if isinstance(images, str):
        return _fail("set image", images, USAGE)
    cluster, namespace = connect(args)
    rollout = cluster.get(rollout_key(namespace, args.name))
    if rollout is None:
        return _fail("set image", f"rollout {namespace}/{args.name} not found")
    template = (rollout.get("spec") or {}).get("template")
    if template is None:
        return _fail("set image", "this Rollout releases the Deployment in spec.workloadRef: set its image")
    patch = image_patch(template, images)
    if isinstance(patch, str):
        return _fail("set image", f"{namespace}/{args.name}: {patch}")
    try:
        cluster.request("PATCH", _path(namespace, args.name), patch, JSON_PATCH)
    except KubeError as error:
        return _fail("set image", f"{namespace}/{args.name}: {error.message}")
    for name, image in images.items():
        print(f"rollout {namespace}/{args.name}: container {name} image set to {image}")
    return 0


def _path(namespace: str, name: str) -> str:
    return object_path(rollout_key(namespace, name))
