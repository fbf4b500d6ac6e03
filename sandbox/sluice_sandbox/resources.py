"""
What the sandbox API server serves: one :class:`ResourceSpec` per group/version/resource.

A spec carries the discovery metadata (names, verbs, subresources), what the OpenAPI documents
and Table responses need (a CRD version's schema and printer columns), and the resource's
admission step (:attr:`ResourceSpec.prepare`: defaulting, pruning and validation of every
written object) and, for pods, their graceful deletion (:attr:`ResourceSpec.grace_period`).
Plain data with no behaviour of its own, so every other module may import it.
"""

import dataclasses
import datetime
import enum
import re
from collections.abc import Callable, Mapping
from typing import Any

JsonObject = dict[str, Any]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = ("get", "patch", "update")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_time(epoch: float) -> str:
    """
    A timestamp with microseconds (RFC 3339, which clients parse): for the times that the
    sandbox's sub-second delays are measured from (pods' start, the end of a grace period).
    """
    stamp = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return stamp.isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(value: Any) -> float | None:
    """Epoch seconds of a timestamp (None if absent or malformed)."""
    try:
        return datetime.datetime.fromisoformat(str(value)).timestamp() if value else None
    except ValueError:
        return None


class FieldValidation(enum.StrEnum):
    """The ``fieldValidation`` query parameter: what to do about fields the schema does not know."""

    IGNORE = "Ignore"  # drop them silently (what in-process callers get)
    WARN = "Warn"  # drop them and say so in a ``Warning`` header (the API server's default)
    STRICT = "Strict"  # refuse the request (kubectl's default, ``--validate=strict``)


@dataclasses.dataclass
class Admission:
    """
    One write as the admission step sees it: what it is (the operation, the subresource), how
    strict to be, and what to tell the client. ``warnings`` is filled in by the admission step.
    """

    operation: str  # 'create' | 'update'
    subresource: str | None = None
    field_validation: FieldValidation = FieldValidation.IGNORE
    warnings: list[str] = dataclasses.field(default_factory=list)
    old: JsonObject | None = None  # the stored object, on updates


# Defaulting, pruning and validation of a written object, in place; raises ApiError to refuse it.
Prepare = Callable[["ResourceSpec", JsonObject, Admission], None]

# Graceful deletion: the grace period (seconds) of a deletion of the object, given the request's
# ``gracePeriodSeconds`` (None if not given, never negative); 0 removes the object at once.
GracePeriod = Callable[[JsonObject, int | None], int]


@dataclasses.dataclass(frozen=True)
class ScaleSpec:
    """Where the ``/scale`` subresource reads & writes, as in a CRD's ``subresources.scale``."""

    spec_replicas_path: str = ".spec.replicas"
    status_replicas_path: str = ".status.replicas"
    # Either a string field, or (for built-ins) a structured metav1.LabelSelector to render.
    label_selector_path: str | None = None


@dataclasses.dataclass(frozen=True)
class ResourceSpec:
    """
    One served group/version/resource with its discovery metadata and write semantics.
    """

    group: str
    version: str
    plural: str
    kind: str
    singular: str = ""
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    status: bool = False  # has the /status subresource
    scale: ScaleSpec | None = None  # has the /scale subresource
    builtin: bool = True  # built-ins accept strategic merge patches; custom resources do not
    # Whether an update may leave out metadata.resourceVersion (a 422 otherwise): the resource's
    # AllowUnconditionalUpdate() in the API server, false for Leases (leader election relies on it).
    unconditional_update: bool = True
    prepare: Prepare | None = dataclasses.field(default=None, compare=False)
    # Resources deleted gracefully (pods): a deletion with a grace period only marks the object
    # (deletionTimestamp), and whoever plays its controller deletes it again when done. None:
    # every deletion removes the object at once (once it has no finalizers).
    grace_period: GracePeriod | None = dataclasses.field(default=None, compare=False)
    # A CRD version's openAPIV3Schema and additionalPrinterColumns (None/empty for built-ins).
    schema: Mapping[str, Any] | None = dataclasses.field(default=None, compare=False)
    printer_columns: tuple[Mapping[str, Any], ...] = dataclasses.field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.singular:
            object.__setattr__(self, "singular", self.kind.lower())

    @property
    def key(self) -> tuple[str, str]:
        """The storage key: all served versions of a resource share the same objects."""
        return self.group, self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified_plural(self) -> str:
        """As in API error messages: ``deployments.apps``, ``pods``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def subresources(self) -> tuple[str, ...]:
        return (("status",) if self.status else ()) + (("scale",) if self.scale else ())

    def names(self) -> set[str]:
        """All the names a user may call it by (as kubectl does): plural, singular, kind, short."""
        return {self.plural, self.singular, self.kind.lower(), *self.short_names}


_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """
    A sort key for Kubernetes-style versions, highest priority first (as discovery orders them):
    GA before beta before alpha, bigger numbers first, unconventional versions last.
    """
    match = _VERSION_RE.match(version)
    if match is None:
        return 3, 0, 0, version
    major, stage, minor = match.groups()
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return rank, -int(major), -int(minor or 0), version
