"""kopf wiring shared by Sluice's kinds: one daemon per object, events only wake it.

A kind (Rollout, Application) has a reconciler and wake-up flags in the
`OperatorContext`. `register_kind` adds to a registry: a daemon per object
running `reconcile_loop`, so each object has a single writer; an event handler
on the kind that wakes that object's daemon; and, for each kind of object it
owns, an event handler that wakes the owner named by a label on the object
(a Rollout's Deployments, an Application's Rollouts), so readiness, commands
and progress are acted on at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from operators.api.base import GROUP, VERSION
from operators.foundation.cache import Watched
from operators.foundation.loop import Reconcile, Wakeups, gate_of, reconcile_loop
from operators.handlers.context import OperatorContext

# Long enough for a reconciliation under way (its API calls time out) to finish.
CANCELLATION_TIMEOUT = 10.0


@dataclass(frozen=True)
class Owned:
    """Objects whose events wake the daemon of the object named by their `owner_label`."""

    group: str
    version: str
    plural: str
    kind: str
    owner_label: str
    # kopf's label filter: which of these objects are worth an event at all.
    labels: Mapping[str, Any] = field(default_factory=dict)
    # The labels are also the watch's selector, applied by the API server, so that no other
    # object of the kind is ever sent (a kind Sluice owns only part of: Deployments, Services).
    # Not for a kind whose other objects are watched too (an Application's Rollouts).
    server_side: bool = False
    # False: the events only feed the cache (the owner's own writes, such as its revision history).
    wakes: bool = True

    @property
    def watched(self) -> Watched:
        api_version = f"{self.group}/{self.version}" if self.group else self.version
        return Watched(api_version, self.kind, self.selector, index_label=self.owner_label)

    @property
    def selector(self) -> str:
        return ",".join(f"{name}={value}" for name, value in sorted(self.labels.items()))


# Work before deletion: None when done, else seconds until it should be tried again.
Finalize = Callable[[str, str], float | None]


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    # The kind's reconciliation and its wake-up flags (each kind has its own: names may repeat).
    parts: Callable[[OperatorContext], tuple[Reconcile, Wakeups]]
    owned: tuple[Owned, ...] = ()
    # What must happen before an object of the kind goes (a Rollout hands back what it adopted):
    # called with (namespace, name) once it is being deleted, again after the seconds it returns,
    # until it returns None. kopf's finalizer holds the object meanwhile.
    finalize: Callable[[OperatorContext], Finalize] | None = None

    def watched(self) -> list[Watched]:
        """What the kind's watches deliver into the cache: the kind itself and what it owns."""
        owned = [owned.watched for owned in self.owned if owned.server_side]
        return [Watched(f"{GROUP}/{VERSION}", self.kind), *owned]


def observe(context: OperatorContext, event: Mapping[str, Any]) -> None:
    """Hand a watch event to the cache the reconcilers read from (kopf's event loop, never blocks)."""
    body = event.get("object")
    if isinstance(body, Mapping) and body.get("metadata"):
        context.cache.observe(body, deleted=event.get("type") == "DELETED")


def register_kind(registry: kopf.OperatorRegistry, kind: Kind) -> None:
    """Add the daemon and the wake-up handlers of `kind` to `registry` (a fresh one per operator run)."""

    async def loop(
        *,
        name: str,
        namespace: str | None,
        stopped: kopf.DaemonStopped,
        memo: Any,
        logger: kopf.Logger,
        body: kopf.Body,
        **_: Any,
    ) -> None:
        assert namespace is not None  # Sluice's daemon kinds are namespaced
        context: OperatorContext = memo["context"]
        # kopf may start the daemon before its event handlers saw the object: the first pass
        # reads what kopf already has rather than asking the API server for it.
        context.cache.observe(dict(body))
        reconcile, wakeups = kind.parts(context)
        # The gate: this process's shard, and whether it leads (foundation.leadership).
        await reconcile_loop(
            kind.kind,
            reconcile,
            wakeups,
            namespace,
            name,
            stopped,
            logger,
            context.error_backoff,
            gate=gate_of(memo),
        )

    async def changed(
        *, name: str, namespace: str | None, body: kopf.Body, event: Any, memo: Any, **_: Any
    ) -> None:
        observe(memo["context"], event)
        # `memo` here is this object's own: it remembers what the last wake-up saw.
        seen = intent(body)
        if memo.get("intent") == seen:
            return
        memo["intent"] = seen
        kind.parts(memo["context"])[1].wake(namespace or "", name)

    kopf.daemon(
        GROUP,
        VERSION,
        kind.plural,
        id=f"{kind.kind}-loop",
        cancellation_timeout=CANCELLATION_TIMEOUT,
        registry=registry,
    )(loop)
    kopf.on.event(GROUP, VERSION, kind.plural, id=f"{kind.kind}-changed", registry=registry)(changed)
    if kind.finalize is not None:
        kopf.on.delete(GROUP, VERSION, kind.plural, id=f"{kind.kind}-finalize", registry=registry)(
            _finalizer(kind, kind.finalize)
        )
    for owned in kind.owned:
        # The core group is written as its version alone ("v1", "services"), as kopf reads it.
        resource = (
            (owned.group, owned.version, owned.plural) if owned.group else (owned.version, owned.plural)
        )
        kopf.on.event(
            *resource,
            id=f"{kind.kind}-{owned.plural}-changed",
            labels=dict(owned.labels) or None,
            registry=registry,
        )(_owner_waker(kind, owned))


def intent(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a person can change about an object: its spec (generation), annotations, deletion.

    Status-only events are the daemon's own writes (and kopf's bookkeeping):
    waking on them would only make the loop read everything again to find
    nothing to do, the bulk of the API requests per step.
    """
    meta = body.get("metadata", {})
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith(_KOPF_ANNOTATIONS)
    }
    return meta.get("generation"), sorted(annotations.items()), meta.get("deletionTimestamp")


# kopf keeps its progress in annotations under this prefix (its default settings).
_KOPF_ANNOTATIONS = "kopf.zalando.org/"


def _finalizer(kind: Kind, finalize: Callable[[OperatorContext], Finalize]) -> Callable[..., Any]:
    async def deleting(*, name: str, namespace: str | None, memo: Any, **_: Any) -> None:
        # The daemon stops on deletion (its pass reads the object as gone), so this is the only
        # writer now. Synchronous like a pass: in a worker thread.
        wait = await asyncio.to_thread(finalize(memo["context"]), namespace or "", name)
        if wait is not None:
            raise kopf.TemporaryError(f"{kind.kind} {namespace}/{name}: not yet ready to go", delay=wait)

    return deleting


def _owner_waker(kind: Kind, owned: Owned) -> Callable[..., Any]:
    async def owned_changed(
        *, labels: kopf.Labels, namespace: str | None, event: Any, memo: Any, **_: Any
    ) -> None:
        observe(memo["context"], event)
        owner = labels.get(owned.owner_label)
        if owner and owned.wakes:
            kind.parts(memo["context"])[1].wake(namespace or "", owner)

    return owned_changed
