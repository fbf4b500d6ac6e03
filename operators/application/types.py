"""Component types: Jinja2 templates that turn a component into the parts of a Rollout.

A type renders YAML with the keys ``template`` (the Rollout's pod template),
``service`` and ``traffic`` (both optional), from the variables ``component``
and ``application``. Built-in types ship in this package
(``types/<name>.yaml.j2``); users add their own as files ``<name>.yaml.j2`` in
a directory given to ``sluice run --component-types DIR`` (typically a
ConfigMap mounted there), which is read again whenever its files change.

Templates come from whoever may edit that directory: they run in the same
strict sandbox as query templates (``operators.templating``), in a worker
process bounded in time and memory, with one helper, ``fail("why")``, for
refusing a component they cannot render. Their output is read as YAML here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from operators.api.application import TYPE_NAME_PATTERN
from operators.templating import renderer
from operators.templating.renderer import TemplateKind
from operators.templating.sandbox import TemplateProblem, Wording

logger = logging.getLogger(__name__)

SUFFIX = ".yaml.j2"
BUILTIN_ORIGIN = "built-in"
# What a type may render, as keys of the Rollout's spec.
OUTPUT_KEYS = ("template", "service", "traffic")
# The variables a type may use, as users write them (also listed in errors).
VARIABLES = (
    "component.name",
    "component.image",
    "component.replicas",
    "component.ports",
    "component.env",
    "component.resources",
    "component.route",
    "component.properties.<name>",
    "application.name",
    "application.namespace",
)
# A pod template is a few KiB; more than this is a loop gone wild.
MAX_OUTPUT = 256 * 1024

COMPONENT_TYPE = TemplateKind(Wording(subject="template", template="template"), MAX_OUTPUT, helpers=("fail",))
_TYPE_NAME = re.compile(TYPE_NAME_PATTERN)


# (file name, mtime in ns, size) of each type file in a directory.
Signature = tuple[tuple[str, int, int], ...]


class ComponentTypeError(ValueError):
    """The component types directory cannot be used; raised when the operator starts."""


@dataclass(frozen=True)
class ComponentType:
    name: str
    origin: str  # "built-in", or the file it was read from
    source: str

    def render(self, variables: Mapping[str, Any]) -> dict[str, Any]:
        """The rendered parts (template, service, traffic); raises TemplateProblem naming the cause.

        `variables` are plain data (``{"component": {...}, "application": {...}}``):
        the template renders in a worker process, compiled once per source text.
        """
        text = renderer.render(COMPONENT_TYPE, self.source, VARIABLES, variables)
        try:
            output = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" on line {mark.line + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or type(error).__name__
            raise TemplateProblem(f"template output is not valid YAML{where}: {problem}") from None
        return _checked_output(output)


def _checked_output(output: object) -> dict[str, Any]:
    if not isinstance(output, dict):
        raise TemplateProblem(f"template must render a mapping with the keys {', '.join(OUTPUT_KEYS)}")
    unknown = sorted(str(key) for key in output if key not in OUTPUT_KEYS)
    if unknown:
        raise TemplateProblem(
            f"template renders unknown key {unknown[0]!r}; a type renders {', '.join(OUTPUT_KEYS)}"
        )
    if not isinstance(output.get("template"), dict):
        raise TemplateProblem("template renders no pod template: the key 'template' must be a mapping")
    checked: dict[str, Any] = _without_nulls(output)
    return checked


def _without_nulls(value: Any) -> Any:
    """Nulls dropped: Kubernetes reads them as absent, and a live object never has them to compare."""
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value if item is not None]
    return value


@dataclass(frozen=True)
class Catalog:
    """The component types known at one moment, and the ones that cannot be used with the reason."""

    types: Mapping[str, ComponentType]
    problems: Mapping[str, str] = field(default_factory=dict)

    def lookup(self, name: str) -> ComponentType:
        if name in self.problems:
            raise TemplateProblem(self.problems[name])
        if name not in self.types:
            known = ", ".join(sorted(self.types))
            raise TemplateProblem(f"unknown component type {name!r}; known types: {known}")
        return self.types[name]


def builtin_types() -> dict[str, ComponentType]:
    folder = resources.files("operators.application") / "types"
    return {
        entry.name.removesuffix(SUFFIX): ComponentType(
            entry.name.removesuffix(SUFFIX), BUILTIN_ORIGIN, entry.read_text(encoding="utf-8")
        )
        for entry in sorted(folder.iterdir(), key=lambda entry: entry.name)
        if entry.name.endswith(SUFFIX)
    }


class ComponentTypes:
    """The built-in types plus those of a directory, read again when its files change."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.builtins = builtin_types()
        # (signature of the directory, catalog read from it), replaced as one: reconcilers call
        # catalog() from several threads, and each must see a catalog with its own signature.
        self._state: tuple[Signature | None, Catalog] = (None, Catalog(self.builtins))
        if self.directory is not None:
            self._check_at_startup(self.directory)

    def _check_at_startup(self, directory: Path) -> None:
        """Refuse to start on a directory that is missing or shadows a built-in type."""
        if not directory.is_dir():
            raise ComponentTypeError(f"--component-types {directory}: not a directory")
        problems = self.catalog().problems
        if problems:
            raise ComponentTypeError(f"--component-types {directory}: " + "; ".join(problems.values()))

    def catalog(self) -> Catalog:
        """The types now; the directory is read only when a file in it changed."""
        seen, catalog = self._state
        if self.directory is None:
            return catalog
        signature = _signature(self.directory)
        if signature != seen:
            catalog = self._read(self.directory, signature)
            self._state = (signature, catalog)
        return catalog

    def _read(self, directory: Path, signature: Signature) -> Catalog:
        types = dict(self.builtins)
        problems: dict[str, str] = {}
        for file_name, _, _ in signature:
            name = file_name.removesuffix(SUFFIX)
            path = directory / file_name
            if not _TYPE_NAME.fullmatch(name):
                logger.warning("component types: ignoring %s: %r is not a valid type name", path, name)
                problems[name] = f"{path}: {name!r} is not a type name (lowercase letters, digits and '-')"
            elif name in self.builtins:
                problems[name] = (
                    f"{path} defines the built-in type {name!r} again; "
                    "built-in types cannot be replaced: rename the file"
                )
            else:
                try:
                    types[name] = ComponentType(name, str(path), path.read_text(encoding="utf-8"))
                except OSError as error:
                    problems[name] = f"cannot read component type {name!r} from {path}: {error.strerror}"
        logger.info("component types: %s", ", ".join(sorted(types)))
        return Catalog(types, problems)


def _signature(directory: Path) -> Signature:
    """(file name, mtime, size) of each type file: a ConfigMap update swaps the files behind symlinks."""
    entries = []
    try:
        paths = sorted(directory.iterdir())
    except OSError as error:
        logger.warning("component types: cannot list %s: %s", directory, error)
        return ()
    for path in paths:
        if path.name.endswith(SUFFIX) and not path.name.startswith("."):
            try:
                stat = path.stat()
            except OSError:
                continue  # removed between listing and stat: the next look sees the new state
            entries.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(entries)
