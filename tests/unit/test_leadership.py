"""Leader election (client-go's rules) against the sandbox API server, and the shard hash.

The electors' steps run synchronously against a real API server (the
sandbox's: resourceVersions, 409s), each with a clock of its own that the test
moves, so expiry is tested without waiting for it. One test runs the asyncio
task for real, with short durations.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from operators.foundation.cluster import Cluster, KubeError, load_api_client, object_path
from operators.foundation.keys import ObjectKey, key_of
from operators.foundation.leadership import (
    ALWAYS_LEADING,
    ElectionConfig,
    FencedApiClient,
    LeaderElector,
    LeaseSettings,
    NotLeading,
)
from operators.foundation.loop import Gate, Wakeups, reconcile_loop
from operators.foundation.shard import Shard, object_shard, parse_shard
from sluice_sandbox.apiserver import SandboxThread
from tests.apiproxy import RecordingProxy
from tests.unit.test_manifests import lease_role

NS = "default"
DURATION = 10  # the lease duration the tests' electors use; clocks are fake, so it costs nothing
_names = itertools.count()


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxThread]:
    with SandboxThread(kubeconfig=tmp_path_factory.mktemp("sandbox") / "kubeconfig") as api:
        yield api


@pytest.fixture
def kubeconfig(sandbox: SandboxThread) -> Path:
    return sandbox.kubeconfig


@pytest.fixture
def lease_name() -> str:
    return f"lease-{next(_names)}"


def cluster(kubeconfig: Path) -> Cluster:
    return Cluster(load_api_client(str(kubeconfig)))


def elector(
    kubeconfig: Path,
    identity: str,
    name: str,
    *,
    shard: Shard | None = None,
    clock: Clock | None = None,
    client: Cluster | None = None,
) -> LeaderElector:
    config = ElectionConfig(
        identity=identity,
        name=name,
        namespace=NS,
        lease_duration=DURATION,
        renew_deadline=7.0,
        retry_period=2.0,
        shard=shard or Shard(),
    )
    return LeaderElector(client or cluster(kubeconfig), config, clock=clock or Clock())


def lease(kubeconfig: Path, name: str) -> dict[str, Any]:
    body = cluster(kubeconfig).request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{name}")
    return body


# ----- acquiring, renewing, expiry -----


def test_a_missing_lease_is_created_and_held(kubeconfig: Path, lease_name: str) -> None:
    a = elector(kubeconfig, "a", lease_name)
    assert not a.leading()
    assert a.try_acquire_or_renew()
    assert a.leading() and a.holder == "a"
    body = lease(kubeconfig, lease_name)
    spec = body["spec"]
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == DURATION
    assert spec["leaseTransitions"] == 0
    assert spec["acquireTime"] == spec["renewTime"]
    assert spec["renewTime"].endswith("Z") and len(spec["renewTime"].split(".")[1]) == 7, "MicroTime"
    labels = body["metadata"]["labels"]
    assert labels["sluice.dev/operator"] == lease_name and labels["sluice.dev/shards"] == "1"


def test_renewal_keeps_the_acquire_time_and_the_transitions(kubeconfig: Path, lease_name: str) -> None:
    clock = Clock()
    a = elector(kubeconfig, "a", lease_name, clock=clock)
    assert a.try_acquire_or_renew()
    first = lease(kubeconfig, lease_name)["spec"]
    clock.advance(2)
    assert a.try_acquire_or_renew()
    second = lease(kubeconfig, lease_name)["spec"]
    assert second["acquireTime"] == first["acquireTime"]
    assert second["renewTime"] >= first["renewTime"]
    assert second["leaseTransitions"] == 0 and second["holderIdentity"] == "a"


def test_the_leader_stops_leading_at_the_renew_deadline_without_a_request(
    kubeconfig: Path, lease_name: str
) -> None:
    clock = Clock()
    a = elector(kubeconfig, "a", lease_name, clock=clock)
    assert a.try_acquire_or_renew()
    clock.advance(7 - 0.01)
    assert a.leading()
    clock.advance(0.01)
    assert not a.leading(), "the renew deadline passed: no write of ours from now on"


def test_a_held_lease_is_taken_over_only_after_a_full_duration_unchanged_by_the_takers_clock(
    kubeconfig: Path, lease_name: str
) -> None:
    a_clock, b_clock = Clock(), Clock()
    b_clock.now = 5_000_000.0  # the clocks are unrelated: only durations on each count
    a = elector(kubeconfig, "a", lease_name, clock=a_clock)
    b = elector(kubeconfig, "b", lease_name, clock=b_clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew() and not b.leading() and b.holder == "a"
    b_clock.advance(DURATION - 1)
    assert not b.try_acquire_or_renew()
    # The leader renews: the record changed, so b's wait starts again from when it saw the change.
    a_clock.advance(2)
    assert a.try_acquire_or_renew()
    b_clock.advance(2)  # 11s since b first saw the Lease: it would have expired, but it changed
    assert not b.try_acquire_or_renew(), "b sees the renewed record now: its wait starts again"
    # The leader stops renewing (killed); a whole duration after b saw the last renewal, b takes it.
    b_clock.advance(DURATION - 0.01)
    assert not b.try_acquire_or_renew()
    b_clock.advance(0.02)
    assert b.try_acquire_or_renew() and b.leading()
    spec = lease(kubeconfig, lease_name)["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    # The old leader, back, finds it taken and does not lead.
    a_clock.advance(DURATION)
    assert not a.leading()
    assert not a.try_acquire_or_renew() and a.holder == "b"


class RaceAfterRead(Cluster):
    """A Cluster that lets someone else act between its next read and its write."""

    def __init__(self, api: Any, between: Callable[[], None]) -> None:
        super().__init__(api)
        self.between: Callable[[], None] | None = between

    def get(self, key: Any) -> dict[str, Any] | None:
        body = super().get(key)
        if self.between is not None:
            between, self.between = self.between, None
            between()
        return body


def test_a_conflict_means_someone_else_won(kubeconfig: Path, lease_name: str) -> None:
    clock = Clock()
    holder = elector(kubeconfig, "old", lease_name, clock=clock)
    assert holder.try_acquire_or_renew()
    a = elector(kubeconfig, "a", lease_name, clock=clock)
    assert not a.try_acquire_or_renew()
    clock.advance(DURATION + 1)  # expired for a, and for b (who first sees it now, but it is free)...
    assert holder.release()

    # ...then a and b race: b reads, a takes it, b writes with the resourceVersion it read: 409.
    def a_takes_it() -> None:
        assert a.try_acquire_or_renew()

    racing = RaceAfterRead(load_api_client(str(kubeconfig)), a_takes_it)
    b = elector(kubeconfig, "b", lease_name, clock=clock, client=racing)
    assert not b.try_acquire_or_renew(), "b lost the race"
    assert not b.leading()
    assert a.leading()
    spec = lease(kubeconfig, lease_name)["spec"]
    assert spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 1


def test_release_lets_a_successor_in_at_once(kubeconfig: Path, lease_name: str) -> None:
    clock = Clock()
    a = elector(kubeconfig, "a", lease_name, clock=clock)
    b = elector(kubeconfig, "b", lease_name, clock=clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    assert a.release()
    assert not a.leading()
    spec = lease(kubeconfig, lease_name)["spec"]
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1
    assert b.try_acquire_or_renew(), "no wait: the holder is empty"
    spec = lease(kubeconfig, lease_name)["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    assert b.release() and a.release(), "releasing a Lease one does not hold changes nothing"
    assert lease(kubeconfig, lease_name)["spec"]["holderIdentity"] == ""


def test_the_task_elects_renews_and_releases_on_stop(kubeconfig: Path, lease_name: str) -> None:
    config = ElectionConfig(
        identity="a", name=lease_name, namespace=NS, lease_duration=2, renew_deadline=1.0, retry_period=0.1
    )
    a = LeaderElector(cluster(kubeconfig), config)

    async def main() -> list[str]:
        task = asyncio.create_task(a.run())
        await asyncio.wait_for(a.wait_leading(), timeout=10)
        renewed = {lease(kubeconfig, lease_name)["spec"]["renewTime"]}
        lost = a.transition()
        while len(renewed) < 3:  # renewed every retry period
            await asyncio.sleep(0.05)
            renewed.add(lease(kubeconfig, lease_name)["spec"]["renewTime"])
        assert a.leading() and not lost.is_set()
        a.stop()
        await asyncio.wait_for(task, timeout=10)
        assert lost.is_set() and not a.leading()
        return sorted(renewed)

    asyncio.run(main())
    assert lease(kubeconfig, lease_name)["spec"]["holderIdentity"] == "", "released on the way out"


# ----- shard schemes: never two writers while the shard count changes -----


def test_shards_of_one_count_lead_side_by_side(kubeconfig: Path, lease_name: str) -> None:
    first = elector(kubeconfig, "s0", lease_name, shard=Shard(0, 2))
    second = elector(kubeconfig, "s1", lease_name, shard=Shard(1, 2))
    assert first.try_acquire_or_renew() and second.try_acquire_or_renew()
    assert lease(kubeconfig, f"{lease_name}-shard-0-of-2")["spec"]["holderIdentity"] == "s0"
    assert lease(kubeconfig, f"{lease_name}-shard-1-of-2")["spec"]["holderIdentity"] == "s1"


def test_no_lead_while_a_live_lease_of_another_shard_count_exists(kubeconfig: Path, lease_name: str) -> None:
    clock = Clock()
    old = elector(kubeconfig, "old", lease_name, clock=clock)
    new = elector(kubeconfig, "new", lease_name, shard=Shard(0, 2), clock=clock)
    assert old.try_acquire_or_renew()
    assert not new.try_acquire_or_renew() and not new.leading()
    # A dead old operator's Lease stops counting a full duration after `new` first saw it.
    clock.advance(DURATION - 1)
    assert not new.try_acquire_or_renew()
    clock.advance(1)
    assert new.try_acquire_or_renew() and new.leading()
    # ...and the old one, back after a partition, cannot come back to its own Lease (which it still
    # holds on paper) while the new scheme's is live: it looks before writing, and does not write.
    before = lease(kubeconfig, lease_name)
    clock.advance(DURATION)
    assert new.try_acquire_or_renew()
    assert not old.try_acquire_or_renew() and not old.leading()
    assert lease(kubeconfig, lease_name) == before, "not renewed"


def test_a_leader_back_from_a_stall_steps_down_for_a_live_lease_of_another_shard_count(
    kubeconfig: Path, lease_name: str
) -> None:
    old_clock, new_clock = Clock(), Clock()
    old = elector(kubeconfig, "old", lease_name, clock=old_clock)
    new = elector(kubeconfig, "new", lease_name, shard=Shard(0, 2), clock=new_clock)
    assert old.try_acquire_or_renew()
    assert not new.try_acquire_or_renew()
    # The old leader stalls: its renew deadline passes (it stops writing), and by the new operator's
    # clock its Lease expires, so the new scheme takes over.
    old_clock.advance(8)
    assert not old.leading()
    new_clock.advance(DURATION)
    assert new.try_acquire_or_renew()
    # Back, the old leader renews its own Lease (the fast path), looks, sees the new scheme, and gives up.
    assert not old.try_acquire_or_renew() and not old.leading()
    assert new.leading()
    assert lease(kubeconfig, lease_name)["spec"]["holderIdentity"] == "", "it released its own"


def test_a_released_lease_of_another_shard_count_does_not_count(kubeconfig: Path, lease_name: str) -> None:
    clock = Clock()
    old = elector(kubeconfig, "old", lease_name, clock=clock)
    new = elector(kubeconfig, "new", lease_name, shard=Shard(1, 3), clock=clock)
    assert old.try_acquire_or_renew()
    assert not new.try_acquire_or_renew()
    assert old.release()  # the old Deployment deleted: its operator shuts down cleanly
    assert new.try_acquire_or_renew()


@pytest.mark.parametrize("race", ["before-the-write", "after-the-write"])
def test_of_two_shard_counts_racing_at_most_one_leads(kubeconfig: Path, lease_name: str, race: str) -> None:
    """The old scheme's operator acquires while the new one is between its checks; one leads."""
    clock = Clock()
    old = elector(kubeconfig, "old", lease_name, clock=clock)
    api = load_api_client(str(kubeconfig))

    class Racing(Cluster):
        def __init__(self) -> None:
            super().__init__(api)
            self.done = False

        def _race(self) -> None:
            if not self.done:
                self.done = True
                old.try_acquire_or_renew()

        def create(self, obj: Any) -> dict[str, Any]:
            if race == "before-the-write":  # `new` looked (nothing), then `old` acquires, then `new` writes
                self._race()
            created = super().create(obj)
            if race == "after-the-write":  # `new` wrote, then `old` looks and acquires or not
                self._race()
            return created

    new = elector(kubeconfig, "new", lease_name, shard=Shard(0, 2), clock=clock, client=Racing())
    new_won = new.try_acquire_or_renew()
    assert [old.leading(), new.leading()].count(True) == 1
    assert new_won is new.leading()
    if race == "before-the-write":
        assert old.leading(), "the new operator saw the old Lease right after taking its own, and gave it up"
        assert lease(kubeconfig, f"{lease_name}-shard-0-of-2")["spec"]["holderIdentity"] == ""
    else:
        assert new.leading(), "the old operator saw the new scheme's live Lease and did not lead"


def test_the_elector_needs_exactly_the_roles_verbs_on_leases_in_its_namespace(
    sandbox: SandboxThread, tmp_path: Path, lease_name: str
) -> None:
    """Everything an elector does (create, renew, read, take over, look at other shard counts,
    release), through a recording proxy: the requests are exactly manifests/rbac.yaml's Lease Role."""
    with RecordingProxy(sandbox.url) as proxy:
        kubeconfig = proxy.kubeconfig(sandbox.kubeconfig, tmp_path / "kubeconfig")
        clock = Clock()
        a = elector(kubeconfig, "a", lease_name, clock=clock)
        b = elector(kubeconfig, "b", lease_name, clock=clock)
        assert a.try_acquire_or_renew() and a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()
        clock.advance(DURATION + 1)
        assert b.try_acquire_or_renew() and b.release()
    verbs = set()
    for request in proxy.requests:
        parts = request.path.strip("/").split("/")
        assert parts[:6] == ["apis", "coordination.k8s.io", "v1", "namespaces", NS, "leases"], request.path
        named = len(parts) > 6
        verbs.add({"GET": "get" if named else "list", "POST": "create", "PUT": "update"}[request.method])
    role = lease_role()
    assert verbs == set(role["rules"][0]["verbs"])


# ----- the fence, and the loops' gate -----


def test_the_fence_refuses_writes_while_not_leading(kubeconfig: Path) -> None:
    leading = [False]
    configuration = load_api_client(str(kubeconfig)).configuration
    fenced = Cluster(FencedApiClient(configuration, lambda: leading[0]))
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fenced", "namespace": NS}}
    with pytest.raises(NotLeading):
        fenced.create(body)
    key = ObjectKey("v1", "ConfigMap", NS, "fenced")
    assert fenced.get(key) is None, "reads go through"
    leading[0] = True
    fenced.create(body)
    leading[0] = False
    with pytest.raises(NotLeading):
        fenced.merge_patch(key, {"data": {"a": "b"}})
    with pytest.raises(NotLeading):
        fenced.delete(key)
    assert fenced.get(key) is not None


class Switch:
    """A Leadership a test flips."""

    def __init__(self, leading: bool) -> None:
        self._leading = leading
        self._transition = asyncio.Event()

    def leading(self) -> bool:
        return self._leading

    async def wait_leading(self) -> None:
        while not self._leading:
            await self._transition.wait()

    def transition(self) -> asyncio.Event:
        return self._transition

    def flip(self, leading: bool) -> None:
        self._leading = leading
        self._transition.set()
        self._transition = asyncio.Event()


class Stopped:
    """kopf's DaemonStopped, as much as the loop uses of it."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __bool__(self) -> bool:
        return self.event.is_set()

    def wait(self) -> Any:
        return self.event.wait()


class Log:
    def __getattr__(self, _: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def run_loop(gate: Gate, script: Callable[[Switch | Any, Stopped, list[float]], Any]) -> list[float]:
    """Run `reconcile_loop` with a counting reconcile while `script` acts; the passes' times."""

    async def main() -> list[float]:
        passes: list[float] = []
        stopped = Stopped()
        loop = asyncio.get_running_loop()

        def reconcile(namespace: str, name: str) -> float:
            passes.append(loop.time())
            return 3600.0  # nothing timed: only wake-ups and leadership bring the next pass

        task = asyncio.create_task(
            reconcile_loop("Rollout", reconcile, Wakeups(), "shop", "web", stopped, Log(), 1.0, gate=gate)
        )
        await script(gate.leadership, stopped, passes)
        stopped.event.set()
        await asyncio.wait_for(task, timeout=5)
        return passes

    return asyncio.run(main())


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_follower_loop_waits_for_leadership_and_a_takeover_starts_it() -> None:
    switch = Switch(leading=False)

    async def script(leadership: Switch, stopped: Stopped, passes: list[float]) -> None:
        await asyncio.sleep(0.2)
        assert passes == [], "a follower never reconciles"
        leadership.flip(True)
        await until(lambda: len(passes) == 1)
        leadership.flip(False)  # lost: the long sleep ends, and the loop waits again
        await asyncio.sleep(0.2)
        assert len(passes) == 1
        leadership.flip(True)
        await until(lambda: len(passes) == 2)

    assert len(run_loop(Gate(switch, Shard()), script)) == 2


def test_another_shards_object_is_never_reconciled() -> None:
    owner = object_shard("shop", "web", 2)
    mine = Gate(ALWAYS_LEADING, Shard(owner, 2))
    theirs = Gate(ALWAYS_LEADING, Shard(1 - owner, 2))

    async def script(_: Any, stopped: Stopped, passes: list[float]) -> None:
        await asyncio.sleep(0.2)

    assert len(run_loop(mine, script)) == 1
    assert run_loop(theirs, script) == []


# ----- configuration and the shard hash -----


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (LeaseSettings(lease_duration=10, renew_deadline=10), "--renew-deadline (10s) must be shorter"),
        (LeaseSettings(renew_deadline=2, retry_period=2), "--retry-period (2s) times 1.2 must be shorter"),
        (LeaseSettings(lease_duration=0, renew_deadline=0.5), "--lease-duration must be at least 1"),
        (LeaseSettings(name="Sluice_Operator"), "--lease-name 'Sluice_Operator'"),
        (LeaseSettings(name="x" * 64), "at most 63 characters"),
    ],
)
def test_settings_that_cannot_work_are_refused_with_the_flag_named(
    settings: LeaseSettings, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings.config("me", Shard())


def test_the_default_settings_are_client_gos() -> None:
    config = LeaseSettings(namespace="sluice-system").config("me", Shard())
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (15, 10.0, 2.0)
    assert config.lease_name == "sluice-operator"
    assert LeaseSettings(namespace="x").config("me", Shard(2, 3)).lease_name == "sluice-operator-shard-2-of-3"


def test_the_lease_namespace_defaults_to_the_pods(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "sluice-system")
    assert LeaseSettings().config("me", Shard()).namespace == "sluice-system"


@pytest.mark.parametrize(
    ("text", "shard"), [("0/1", Shard(0, 1)), ("2/3", Shard(2, 3)), (" 1 / 4 ", Shard(1, 4))]
)
def test_shard_parsing(text: str, shard: Shard) -> None:
    assert parse_shard(text) == shard


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2/2", "the index must be from 0 to 1"),
        ("0/0", "at least 1"),
        ("-1/2", "is not I/N"),
        ("1", "is not I/N"),
        ("a/b", "is not I/N"),
    ],
)
def test_shard_parsing_refuses_nonsense(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_shard(text)


def test_the_shard_hash_is_stable_and_even() -> None:
    # SHA-256 of "namespace/name", not Python's per-process salted hash(): pinned values.
    assert [object_shard("shop", f"web-{i}", 4) for i in range(8)] == [2, 2, 0, 0, 0, 3, 0, 0]
    # A cluster-scoped object (a SidecarSet) is keyed by its name alone.
    assert object_shard("", "log-agent", 1000) != object_shard("default", "log-agent", 1000)
    counts = collections.Counter(object_shard("ns", f"rollout-{i}", 4) for i in range(4000))
    assert sorted(counts) == [0, 1, 2, 3] and all(900 < count < 1100 for count in counts.values()), counts
    assert Shard().owns("any", "thing"), "unsharded, everything is ours"


def test_writes_of_the_sandbox_are_conditional(kubeconfig: Path, lease_name: str) -> None:
    """What the elector relies on: a PUT with a stale resourceVersion is a 409."""
    c = cluster(kubeconfig)
    metadata = {"name": lease_name, "namespace": NS}
    created = c.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata})
    path = object_path(key_of(created))
    c.request("PUT", path, {**created, "spec": {"holderIdentity": "x"}})
    with pytest.raises(KubeError) as conflict:
        c.request("PUT", path, {**created, "spec": {"holderIdentity": "y"}})
    assert conflict.value.status == 409
