"""Leader election through a ``coordination.k8s.io/v1`` Lease, with client-go's semantics.

Every replica of the operator runs kopf fully (watches, the webhook); only the
one holding the Lease reconciles. The rules are client-go's ``leaderelection``
package's:

- A candidate takes the Lease when nobody holds it (``holderIdentity`` empty)
  or when its record has not changed for ``leaseDurationSeconds`` *by the
  candidate's own clock* since it first saw that record: clocks are never
  compared across machines. Taking it over increments ``leaseTransitions``.
- Every write is an update with the ``resourceVersion`` read: a 409 means
  someone else wrote first, and this attempt failed.
- The leader renews every retry period. It stops leading as soon as no renewal
  has succeeded for the renew deadline (shorter than the lease duration), so
  it has stopped before any other process can consider the Lease expired.
- On a clean shutdown the leader releases the Lease (empty holder, a duration
  of 1 s), so a successor need not wait out the lease duration.

On top of client-go: :meth:`LeaderElector.leading` is time-based (false the
moment the renew deadline passes, whether or not the election task has run),
and :class:`FencedApiClient` refuses the operator's writes whenever it is
false, so a pass under way when leadership is lost stops at its next write.

Shards (`foundation.shard`) each have their own Lease, labelled with the
installation (the base Lease name) and the shard count. So that a Rollout never
has two writers while the shard count changes, an operator does not lead while
a live Lease of the same installation with another shard count exists: it
looks before taking its Lease and again right after, and steps down (releasing
it) if one appeared meanwhile. Of two operators racing, at least one sees the
other; retries are jittered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from kubernetes import client as k8s

from operators.foundation.cluster import Cluster, KubeError, object_path
from operators.foundation.keys import ObjectKey
from operators.foundation.shard import Shard

logger = logging.getLogger(__name__)

LEASE_API = "coordination.k8s.io/v1"
DEFAULT_LEASE_NAME = "sluice-operator"
# client-go's defaults (and kube-controller-manager's).
DEFAULT_LEASE_DURATION = 15
DEFAULT_RENEW_DEADLINE = 10.0
DEFAULT_RETRY_PERIOD = 2.0
# A candidate waits the retry period plus up to this fraction more (client-go's JitterFactor).
JITTER = 1.2
# Labels on our Leases: the installation (base Lease name) and its shard scheme.
NAME_LABEL = "app.kubernetes.io/name"
OPERATOR_LABEL = "sluice.dev/operator"
SHARDS_LABEL = "sluice.dev/shards"
SHARD_LABEL = "sluice.dev/shard"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_LABEL_VALUE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# Requests that never change anything: a follower may make them.
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


class NotLeading(Exception):
    """A write refused because this process does not (or no longer) hold the leader Lease."""


def default_identity() -> str:
    """``<pod or host>_<pid>_<random>``: unique per process, even for a container restarted in its pod."""
    host = os.environ.get("POD_NAME") or socket.gethostname() or "sluice"
    return f"{host}_{os.getpid()}_{secrets.token_hex(3)}"


def default_lease_namespace() -> str:
    """$POD_NAMESPACE, else the namespace of the in-cluster service account, else ``default``."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def micro_time(moment: datetime) -> str:
    """A Lease's MicroTime: RFC 3339 with microseconds, UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class ElectionConfig:
    """Which Lease, who we are, and client-go's three durations (seconds)."""

    identity: str
    # The installation's Lease name; sharded operators add -shard-I-of-N.
    name: str = DEFAULT_LEASE_NAME
    namespace: str = "default"
    lease_duration: int = DEFAULT_LEASE_DURATION
    renew_deadline: float = DEFAULT_RENEW_DEADLINE
    retry_period: float = DEFAULT_RETRY_PERIOD
    shard: Shard = field(default_factory=Shard)

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        if not self.identity:
            return "the identity must not be empty"
        if len(self.name) > 63 or not _LABEL_VALUE.match(self.name):
            return (
                f"--lease-name {self.name!r}: lowercase letters, digits, '-' and '.', at most 63 characters, "
                "starting and ending with a letter or digit"
            )
        if not self.namespace:
            return "the lease namespace must not be empty"
        if self.lease_duration < 1:
            return f"--lease-duration must be at least 1 second, not {self.lease_duration}"
        if not 0 < self.renew_deadline < self.lease_duration:
            return (
                f"--renew-deadline ({self.renew_deadline:g}s) must be shorter than --lease-duration "
                f"({self.lease_duration}s): a leader must stop before others may take over"
            )
        if not 0 < self.retry_period * JITTER < self.renew_deadline:
            return (
                f"--retry-period ({self.retry_period:g}s) times {JITTER} must be shorter than "
                f"--renew-deadline ({self.renew_deadline:g}s): a leader must be able to retry in time"
            )
        return None

    @property
    def lease_name(self) -> str:
        if not self.shard.sharded:
            return self.name
        return f"{self.name}-shard-{self.shard.index}-of-{self.shard.count}"

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(LEASE_API, "Lease", self.namespace, self.lease_name)

    @property
    def labels(self) -> dict[str, str]:
        return {
            NAME_LABEL: "sluice",
            OPERATOR_LABEL: self.name,
            SHARDS_LABEL: str(self.shard.count),
            SHARD_LABEL: str(self.shard.index),
        }

    def describe(self) -> str:
        return f"Lease {self.namespace}/{self.lease_name}"


@dataclass(frozen=True)
class LeaseSettings:
    """`sluice run`'s leader election flags; with an identity and a shard they make an ElectionConfig."""

    name: str = DEFAULT_LEASE_NAME
    # None: $POD_NAMESPACE, else the service account's namespace, else default.
    namespace: str | None = None
    lease_duration: int = DEFAULT_LEASE_DURATION
    renew_deadline: float = DEFAULT_RENEW_DEADLINE
    retry_period: float = DEFAULT_RETRY_PERIOD

    def config(self, identity: str, shard: Shard) -> ElectionConfig:
        """Raises ValueError, naming the flag, for settings that cannot work."""
        return ElectionConfig(
            identity=identity,
            name=self.name,
            namespace=self.namespace or default_lease_namespace(),
            lease_duration=self.lease_duration,
            renew_deadline=self.renew_deadline,
            retry_period=self.retry_period,
            shard=shard,
        )


class Leadership(Protocol):
    """Whether this process may write now, and a way to wait for that to change."""

    def leading(self) -> bool:
        """Thread-safe: true while this process holds the Lease and its renew deadline has not passed."""
        ...

    async def wait_leading(self) -> None:
        """Return once this process leads (at once when it does)."""
        ...

    def transition(self) -> asyncio.Event:
        """An Event set at the next gain or loss of leadership."""
        ...


class AlwaysLeading:
    """``--no-leader-election``: this process is the only writer, by the user's word."""

    def leading(self) -> bool:
        return True

    async def wait_leading(self) -> None:
        return

    def transition(self) -> asyncio.Event:
        return asyncio.Event()  # never set


ALWAYS_LEADING = AlwaysLeading()


def _spec(lease: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict((lease or {}).get("spec") or {})


def _holder(spec: Mapping[str, Any]) -> str:
    return str(spec.get("holderIdentity") or "")


class LeaderElector:
    """One process's view of one Lease: acquire, renew, release (see the module's docstring).

    The synchronous steps (:meth:`try_acquire_or_renew`, :meth:`release`) run
    in a thread of the elector's own, never in the pool the release loops use,
    so a busy operator still renews in time. :meth:`run` is the asyncio task.
    """

    def __init__(
        self,
        cluster: Cluster,
        config: ElectionConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(tz=UTC),
        rng: random.Random | None = None,
    ) -> None:
        self.cluster = cluster
        self.config = config
        self._clock = clock
        self._wall = wall
        self._random = rng or random.Random()
        self._lock = threading.Lock()
        self._lease: dict[str, Any] | None = None  # as last read or written: its resourceVersion
        self._observed: dict[str, Any] = {}  # its spec (client-go's observedRecord)
        self._observed_time = -math.inf  # when that spec was first seen, by our clock
        self._leading_until = -math.inf  # the renew deadline of the last successful write
        self._rivals: dict[str, tuple[dict[str, Any], float]] = {}  # other schemes' Leases: spec, seen
        self._announced = False
        self._transition = asyncio.Event()
        self._stop = asyncio.Event()
        self._lapse: asyncio.TimerHandle | None = None
        self._last_problem = ""
        self._closing = False  # set on the way out: no new term, whatever an attempt under way finds

    # ----- what the operator asks -----

    def leading(self) -> bool:
        return self._clock() < self._leading_until

    async def wait_leading(self) -> None:
        while not self.leading():
            await self.transition().wait()

    def transition(self) -> asyncio.Event:
        return self._transition

    @property
    def holder(self) -> str:
        """The holder this process last saw ('' for none)."""
        with self._lock:
            return _holder(self._observed)

    # ----- the state machine's steps (synchronous; one thread at a time) -----

    def try_acquire_or_renew(self) -> bool:
        """One attempt: True when this process holds the Lease afterwards (client-go's tryAcquireOrRenew)."""
        with self._lock:
            return self._try_acquire_or_renew()

    def release(self) -> bool:
        """Stop leading at once; then, if we held the Lease, give it up. False if the write failed."""
        with self._lock:
            self._leading_until = -math.inf
            if not self._is_leader() or self._lease is None:
                return True
            return self._release_locked()

    def _try_acquire_or_renew(self) -> bool:
        config = self.config
        start = self._clock()
        # Renewing within the renew deadline continues a term others already defer to; anything
        # else (taking the Lease, or coming back to our own after a lapse) checks the other shard
        # schemes first, and again once written.
        continuing = self.leading()
        now = micro_time(self._wall())
        record: dict[str, Any] = {
            "holderIdentity": config.identity,
            "leaseDurationSeconds": config.lease_duration,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": 0,
        }
        # 1. The leader's fast path: update what it wrote last, assuming nobody else wrote since.
        if self._is_leader() and self._lease_valid(start) and self._lease is not None:
            record["acquireTime"] = self._observed.get("acquireTime") or now
            record["leaseTransitions"] = int(self._observed.get("leaseTransitions") or 0)
            try:
                self._update(record)
            except KubeError as error:
                logger.info("renewing %s failed (%s); reading it again", config.describe(), error)
            else:
                return self._hold(start, continuing)
        # 2. Read the Lease, or create it.
        lease = self.cluster.get(config.key)
        if lease is None:
            if self._live_rival() is not None:
                return False
            metadata = {"name": config.lease_name, "namespace": config.namespace, "labels": config.labels}
            body = {"apiVersion": LEASE_API, "kind": "Lease", "metadata": metadata, "spec": record}
            try:
                created = self.cluster.create(body)
            except KubeError as error:
                if error.status == 409:  # another candidate created it first
                    return False
                raise
            self._observe(created)
            return self._hold(start, continuing=False)
        # 3. Someone holds it and it has not expired, by our clock since its record last changed.
        self._observe(lease)
        leader = self._is_leader()
        if _holder(self._observed) and self._lease_valid(start) and not leader:
            return False
        if not continuing and self._live_rival() is not None:
            return False
        # 4. Take it (or renew it on the slow path).
        if leader:
            record["acquireTime"] = self._observed.get("acquireTime") or now
            record["leaseTransitions"] = int(self._observed.get("leaseTransitions") or 0)
        else:
            record["leaseTransitions"] = int(self._observed.get("leaseTransitions") or 0) + 1
        try:
            self._update(record)
        except KubeError as error:
            if error.status == 409:  # someone else wrote it first: they won
                return False
            raise
        return self._hold(start, continuing and leader)

    def _hold(self, start: float, continuing: bool) -> bool:
        """The Lease is ours as of `start`: lead until the renew deadline, unless (for a new term)
        a live Lease of another shard scheme appeared meanwhile."""
        if self._closing:
            return False
        if not continuing:
            rival = self._live_rival()
            if rival is not None:
                logger.info(
                    "stepping down from %s: Lease %s of another shard count is live",
                    self.config.describe(),
                    rival,
                )
                self._release_locked()
                return False
        self._leading_until = start + self.config.renew_deadline
        return True

    def _release_locked(self) -> bool:
        """client-go's release: an empty holder and a 1-second lease, so nobody waits for it to expire."""
        now = micro_time(self._wall())
        record = {
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": int(self._observed.get("leaseTransitions") or 0),
        }
        try:
            self._update(record)
        except KubeError as error:  # it will expire
            logger.warning("could not release %s: %s", self.config.describe(), error)
            return False
        logger.info("released %s", self.config.describe())
        return True

    def _update(self, record: dict[str, Any]) -> None:
        """PUT the Lease with `record` as its spec, conditional on the resourceVersion last seen."""
        assert self._lease is not None
        lease = {**self._lease, "spec": record}
        metadata = dict(lease.get("metadata") or {})
        metadata["labels"] = {**(metadata.get("labels") or {}), **self.config.labels}
        lease["metadata"] = metadata
        written = self.cluster.request("PUT", object_path(self.config.key), lease)
        self._observe(written)

    def _observe(self, lease: dict[str, Any]) -> None:
        self._lease = lease
        spec = _spec(lease)
        if spec != self._observed:
            if _holder(spec) != _holder(self._observed) and _holder(spec) != self.config.identity:
                logger.info("%s: the leader is %s", self.config.describe(), _holder(spec) or "nobody")
            self._observed = spec
            self._observed_time = self._clock()

    def _is_leader(self) -> bool:
        return _holder(self._observed) == self.config.identity

    def _lease_valid(self, now: float) -> bool:
        duration = self._observed.get("leaseDurationSeconds") or self.config.lease_duration
        return now < self._observed_time + float(duration)

    def _live_rival(self) -> str | None:
        """A Lease of this installation with another shard count, held and not expired by our clock."""
        config = self.config
        leases = self.cluster.list_objects(
            LEASE_API, "Lease", config.namespace, label_selector=f"{OPERATOR_LABEL}={config.name}"
        )
        now = self._clock()
        live = None
        for lease in leases:
            metadata = lease.get("metadata") or {}
            if (metadata.get("labels") or {}).get(SHARDS_LABEL) == str(config.shard.count):
                continue  # our scheme: the other shards (or ourselves)
            name = str(metadata.get("name"))
            spec = _spec(lease)
            seen = self._rivals.get(name)
            if seen is None or seen[0] != spec:
                seen = self._rivals[name] = (spec, now)
            duration = float(spec.get("leaseDurationSeconds") or config.lease_duration)
            if _holder(spec) and now < seen[1] + duration:
                live = name
        return live

    # ----- the asyncio task -----

    async def run(self) -> None:
        """Elect, then renew, until :meth:`stop`; then stop leading and release the Lease."""
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-lease")
        config = self.config
        logger.info(
            "leader election on %s as %s (lease %ss, renew deadline %gs, retry %gs)",
            config.describe(),
            config.identity,
            config.lease_duration,
            config.renew_deadline,
            config.retry_period,
        )
        try:
            while not self._stop.is_set():
                await loop.run_in_executor(executor, self._attempt)
                self._announce()
                if self.leading():
                    self._watch_lapse(loop)
                    period = config.retry_period
                else:
                    period = config.retry_period * (1 + self._random.random() * JITTER)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=period)
        finally:
            self._closing = True
            self._leading_until = -math.inf  # no write of ours after this, whatever the release does
            self._announce()
            try:
                await loop.run_in_executor(executor, self._release_quietly)
            finally:
                executor.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        """Ask :meth:`run` to stop leading, release the Lease and return."""
        self._stop.set()

    def _attempt(self) -> None:
        try:
            self.try_acquire_or_renew()
        except Exception as error:  # the API server unreachable, forbidden...: log, and try again
            problem = f"{type(error).__name__}: {error}"
            if problem != self._last_problem:
                logger.warning("leader election on %s: %s", self.config.describe(), problem)
            self._last_problem = problem
        else:
            self._last_problem = ""

    def _release_quietly(self) -> None:
        try:
            self.release()
        except Exception as error:  # it will expire
            logger.warning("could not release %s: %s", self.config.describe(), error)

    def _watch_lapse(self, loop: asyncio.AbstractEventLoop) -> None:
        """Announce the loss at the renew deadline should no renewal succeed by then."""
        if self._lapse is not None:
            self._lapse.cancel()
        delay = max(0.0, self._leading_until - self._clock()) + 0.001
        self._lapse = loop.call_later(delay, self._announce)

    def _announce(self) -> None:
        leading = self.leading()
        if leading == self._announced:
            return
        self._announced = leading
        if leading:
            logger.info("%s: %s is the leader", self.config.describe(), self.config.identity)
        else:
            logger.info("%s: %s stopped leading", self.config.describe(), self.config.identity)
        self._transition.set()
        self._transition = asyncio.Event()


class FencedApiClient(k8s.ApiClient):
    """The operator's API client: refuses every write while `may_write()` is false (raises NotLeading).

    A reconciliation pass that was under way when leadership was lost stops at
    its next write instead of racing the new leader.
    """

    def __init__(self, configuration: k8s.Configuration, may_write: Callable[[], bool]) -> None:
        super().__init__(configuration)
        self._may_write = may_write

    def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method.upper() not in _READS and not self._may_write():
            raise NotLeading(f"{method} {url}: this process is not the leader")
        return super().call_api(method, url, *args, **kwargs)


class LeaseApiClient(k8s.ApiClient):
    """The elector's own client (its own connections): every request bounded by `timeout` seconds."""

    def __init__(self, configuration: k8s.Configuration, timeout: float) -> None:
        super().__init__(configuration)
        self._timeout = (min(5.0, timeout), timeout)

    def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        kwargs["_request_timeout"] = self._timeout
        return super().call_api(method, url, *args, **kwargs)
