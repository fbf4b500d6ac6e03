"""The YAML documents of the files `sluice lint` reads, each with its node tree, so that any
finding can name the line of the field it is about (PyYAML's composed nodes keep their marks)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

# A path into a document, as pydantic reports them: keys and list indexes.
FieldPath = Sequence[str | int]


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True)
class Finding:
    """One thing `sluice lint` says about a file, at a line (1-based)."""

    file: str
    line: int
    severity: Severity
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity.value}: {self.message}"


@dataclass(frozen=True)
class Document:
    """One YAML document of a file: its data and the node tree it was built from."""

    file: str
    data: Any
    node: yaml.Node

    def line(self, path: FieldPath = ()) -> int:
        """The line of the field at `path` (its key's), or of the nearest enclosing one that exists."""
        return node_at(self.node, path).start_mark.line + 1

    def finding(self, path: FieldPath, severity: Severity, message: str) -> Finding:
        return Finding(self.file, self.line(path), severity, message)


def node_at(node: yaml.Node, path: FieldPath) -> yaml.Node:
    """The node that marks the field at `path` below `node`: a mapping's key (a block's value starts
    on the line after it), a list's item. Steps that lead nowhere (e.g. pydantic's union tags) are
    skipped."""
    mark = node
    for step in path:
        child = _child(node, step)
        if child is not None:
            mark, node = child
    return mark


def _child(node: yaml.Node, step: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    """The (marking node, value node) of `step` in `node`, or None when it has none."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(step):
                return key, value
    if isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
        item: yaml.Node = node.value[step]
        return item, item
    return None


class UnreadableFile(Exception):
    """A file that cannot be read or parsed: a Finding to report instead of its documents."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(str(finding))
        self.finding = finding


def read_documents(path: Path) -> Iterator[Document]:
    """Every non-empty document of the file; raises UnreadableFile on a YAML syntax error."""
    text = path.read_text(encoding="utf-8")  # OSError (a missing file) is the caller's usage error
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                yield Document(str(path), loader.construct_document(node), node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = " ".join(part for part in (error.context, error.problem) if part)
        raise UnreadableFile(Finding(str(path), line, Severity.ERROR, f"invalid YAML: {problem}")) from None
    finally:
        loader.dispose()
