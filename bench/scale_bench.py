"""Benchmark: N Rollouts releasing at once, the operator in its own process (issue #10, part 7).

For each N in ``--sizes`` it starts a fresh sandbox in this process (API server,
simulated pods and traffic, a real Prometheus) *without* its in-process
operator, starts the operator as a process of its own (``sluice run``), creates
N Rollouts, waits for their first deployment (Healthy), then changes every
Rollout's pod template at once: that release is what is measured. Everything is
followed through one watch on Rollouts (in-process, on the sandbox's store: the
bench sends the API server no HTTP request, so it adds nothing to the counts).
After the release, it watches a quiet period (``--quiet-seconds``).

It prints, for each N, with the targets of the issue beside the figures:

- **time for all N to become Healthy**, from the first template change to the
  last Rollout seen Healthy (status written), as a ratio to the *ideal*;
- **check lateness** (p50, p95, max): for each analysis check recorded in status;
- **API requests** the operator made: per Rollout per step during the release
  (reads and writes), and per Rollout and in total per minute of the quiet period;
- **Prometheus queries per analysis interval**, from Prometheus' own
  ``prometheus_http_requests_total{handler="/api/v1/query"}``, beside the number
  of distinct (template, Prometheus) pairs the Rollouts use;
- **operator CPU** (user+sys, as cores used on average and seconds in total)
  and **peak RSS** (VmHWM) of the operator process, and of its children (the
  template-render workers) separately. This process (the sandbox) and
  Prometheus share the machine: their CPU is printed too, for context.

It asserts nothing: a benchmark is not a test.

**The ideal** is what one Rollout alone would take with zero operator latency,
computed from its spec (:func:`ideal_release_seconds`): walking the steps, a
``setWeight`` that needs more canary pods waits the sandbox's pod readiness
delay (``--ready-delay``; the simulator starts all of a Deployment's new pods at
once); a weight change then needs ``minChecksPerStep`` passing checks, the first
due one analysis interval after the change and each next one an interval after
the previous; a pause waits its duration (analysis goes on meanwhile, and the
gate is already open when it ends); promotion rolls the stable Deployment to the
new template, one readiness delay (unlimited surge in the simulator). With the
default spec (``setWeight 50``, ``pause``, one check per step) that is
``ready_delay + interval + pause + ready_delay``. Query time, the scrape
interval and the traffic simulator's tick are taken as zero.

**Check lateness.** A check is due one interval after the later of the last
check and the last weight change (``operators.rollout.verdicts.next_check_at``).
Each time a Rollout's ``status.analysis.lastCheck.time`` changes, the due time is
computed with that very function from the status as it was just before (the
previous check and ``weightChangedAt`` as of then), and compared with:

- the check's own time (``lastCheck.time``, the ``now`` of the pass that
  started it, to the millisecond): *lateness as made*;
- the moment its result appeared in status (seen by the watch): *lateness as
  recorded*, which adds the query (and the operator's query fan-in window, if
  any) and the pass that records the result.

The release's time is also broken down per Rollout from its status history
(the operator's own timestamps): how far beyond its ideal each stage ran (the
spec change noticed, the weight set, the step's check passed, the pause over,
the promotion done), each measured from the actual end of the stage before.

The bench's own process also runs the sandbox, and Prometheus and whatever
else runs on the machine share its CPUs: each run prints their CPU use and
the sandbox loop's lag, so that a slow figure can be told apart from a busy
machine.

Usage::

    python bench/scale_bench.py [--sizes 100,1000] [--interval 5s] [--pause 10s] [--quiet-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple, Protocol

from operators.api.base import parse_duration
from operators.api.rollout import AnalysisStatus, Phase, RolloutSpec
from operators.foundation.clock import parse_time
from operators.rollout.render import canary_replicas
from operators.rollout.verdicts import next_check_at
from sluice_sandbox.environment import Sandbox, SandboxOptions

NAMESPACE = "scale-bench"
API_VERSION = "sluice.dev/v1alpha1"
# What the issue asks of 1,000 Rollouts on 2 cores.
TARGET_RATIO = 1.2
TARGET_LATENESS_P95 = 1.0
TARGET_RSS_MB = 300.0
TARGET_QUIET_REQUESTS = 0.0
# Healthy simulated traffic: no errors, 20 ms per request (sluice_sandbox.behaviour).
ERROR_RATE_MAX = 0.05
P99_MAX_SECONDS = 0.5
OPERATOR_AGENTS = ("sluice-operator", "kopf/")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----- The Rollouts -----


def rollout_body(name: str, args: argparse.Namespace, image: str) -> dict[str, Any]:
    """A 2-step canary (setWeight, pause) analysed by the two built-in metrics, then promoted."""
    metrics = [
        {"name": "error-rate", "template": "request-error-rate", "thresholdRange": {"max": ERROR_RATE_MAX}},
        {"name": "p99", "template": "request-duration-p99", "thresholdRange": {"max": P99_MAX_SECONDS}},
    ]
    return {
        "apiVersion": API_VERSION,
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"bench": "scale"}},
        "spec": {
            "replicas": args.replicas,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": image, "ports": [{"name": "http", "containerPort": 8080}]}
                    ]
                },
            },
            "service": {"port": 80, "targetPort": "http"},
            "traffic": {"gatewayAPI": {"parentRefs": [{"name": "public", "namespace": "default"}]}},
            "strategy": {
                "canary": {
                    "steps": [{"setWeight": args.weight}, {"pause": {"duration": args.pause}}],
                    "abortScaleDownDelaySeconds": 0,
                    "analysis": {"interval": args.interval, "minChecksPerStep": 1, "metrics": metrics},
                }
            },
        },
    }


def metric_pairs(spec: RolloutSpec) -> set[tuple[str, str]]:
    """The distinct (template or query, Prometheus address) pairs of a spec's metrics."""
    analysis = spec.strategy.canary.analysis
    pairs: set[tuple[str, str]] = set()
    for metric in analysis.metrics if analysis else []:
        provider, config = metric.source()
        address = str(getattr(config, "address", None) or f"{provider.field}:default")
        pairs.add((metric.template or metric.query or "", address))
    return pairs


def ideal_release_seconds(spec: RolloutSpec, ready_delay: float) -> float:
    """One Rollout's release with zero operator latency (see the module's docstring)."""
    canary = spec.strategy.canary
    analysis = canary.analysis
    interval = parse_duration(analysis.interval).total_seconds() if analysis else 0.0
    checks = analysis.min_checks_per_step if analysis else 0
    total, weight, pods = 0.0, 0, 0
    for step in canary.effective_steps():
        if step.set_weight is not None:
            needed = canary_replicas(spec, step.set_weight)
            if step.set_weight > weight and needed > pods:
                total += ready_delay  # the new canary pods start together
            pods = needed
            if step.set_weight != weight and step.set_weight > 0:
                total += checks * interval  # passedAtStep restarts at every weight change
            weight = step.set_weight
        elif step.pause is not None:
            if step.pause.duration is None:
                raise ValueError("an indefinite pause has no ideal: give the pause a duration")
            total += parse_duration(step.pause.duration).total_seconds()
    return total + (ready_delay if spec.replicas else 0.0)  # promotion: the stable rolls out


# ----- API requests: one record per HTTP request the sandbox API server served -----


class ApiRequest(NamedTuple):
    at: float  # epoch seconds
    method: str
    path: str
    query: str
    user_agent: str | None  # None: unknown (the access-log fallback)
    status: int | None  # of the response (a watch's when its stream started); None: unknown


class RequestLogLike(Protocol):
    """What this bench uses of ``sluice_sandbox.requestlog.RequestLog`` (``Sandbox.requests``)."""

    def snapshot(
        self, *, user_agent: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[Any]: ...

    def clear(self) -> None: ...

    @property
    def dropped(self) -> int: ...


class RequestSource:
    """The requests the sandbox API server answered, from whatever records them."""

    description = ""

    def requests(self, start: float, end: float) -> list[ApiRequest]:
        """The requests that arrived in [start, end) (epoch seconds)."""
        raise NotImplementedError

    def complete_since(self, start: float) -> bool:
        """Whether every request since `start` is still kept (the log is bounded)."""
        return True

    def reset(self) -> None:
        """Forget what came before (a new phase: keeps the bounded log for what is measured)."""

    def close(self) -> None:
        pass


class SandboxRequestLog(RequestSource):
    """The sandbox API server's request log: method, path, User-Agent, status, arrival of each request."""

    description = "the sandbox API server's request log (operator: User-Agent sluice-operator* or kopf/*)"

    def __init__(self, log: RequestLogLike) -> None:
        self._log = log
        self._epoch_offset = time.time() - time.monotonic()  # its times are time.monotonic()

    def requests(self, start: float, end: float) -> list[ApiRequest]:
        since, until = start - self._epoch_offset, end - self._epoch_offset
        return [
            ApiRequest(r.at + self._epoch_offset, r.method, r.path, r.query, r.user_agent, r.status)
            for r in self._log.snapshot(since=since, until=until)
            if r.at < until
        ]

    def complete_since(self, start: float) -> bool:
        if not self._log.dropped:
            return True
        kept = self._log.snapshot()
        return bool(kept) and kept[0].at <= start - self._epoch_offset

    def reset(self) -> None:
        self._log.clear()


class AccessLogRequests(RequestSource, logging.Handler):
    """Fallback: the API server's DEBUG access-log lines ("GET /api/v1/... -> 200 (0.001s)").

    They carry no User-Agent; but this bench reads and writes through the store in-process and
    nothing else in the sandbox speaks HTTP to it, so every request is the operator's. A line is
    written when the answer ends (a watch's when its stream ends), and that is its time here.
    """

    description = "the sandbox API server's access log (no User-Agent: all counted as the operator's)"
    LOGGER = "sluice_sandbox.apiserver"
    LINE = re.compile(r"^([A-Z]+) (/[^?\s]*)\??(\S*) -> (\d{3}) ")

    def __init__(self) -> None:
        logging.Handler.__init__(self, logging.DEBUG)
        self._records: list[ApiRequest] = []
        self._logger = logging.getLogger(self.LOGGER)
        self._level, self._propagate = self._logger.level, self._logger.propagate
        self._logger.setLevel(logging.DEBUG)
        self._logger.propagate = False  # the access lines are counted, not printed
        self._logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        match = self.LINE.match(record.getMessage())
        if match:
            method, path, query, status = match.groups()
            self._records.append(ApiRequest(record.created, method, path, query, None, int(status)))
        elif record.levelno >= logging.WARNING:
            logging.getLogger("sluice_sandbox").handle(record)  # what the sandbox has to say still shows

    def requests(self, start: float, end: float) -> list[ApiRequest]:
        return [r for r in list(self._records) if start <= r.at < end]

    def reset(self) -> None:
        self._records = []

    def close(self) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)
        self._logger.propagate = self._propagate
        logging.Handler.close(self)


def request_source(sandbox: Sandbox) -> RequestSource:
    """The sandbox's request log (``Sandbox.requests``) when it has one, else its access log."""
    if hasattr(type(sandbox), "requests"):
        return SandboxRequestLog(getattr(sandbox, "requests"))  # noqa: B009 (older sandboxes lack it)
    return AccessLogRequests()


@dataclass
class RequestCounts:
    reads: int = 0  # GET: single objects, lists and watches
    writes: int = 0
    watches: int = 0  # of the reads
    conflicts: int = 0  # the operator's requests answered 409 Conflict
    leases: int = 0  # the operator's requests on Leases (leader election: not per Rollout)
    others: int = 0  # requests from clients that are not the operator
    other_agents: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)  # the operator's, by "METHOD resource"
    complete: bool = True  # False: the bounded request log dropped some of the window's requests

    @property
    def operator(self) -> int:
        return self.reads + self.writes


def is_operator(request: ApiRequest) -> bool:
    return request.user_agent is None or request.user_agent.startswith(OPERATOR_AGENTS)


def count_requests(source: RequestSource, start: float, end: float) -> RequestCounts:
    """The requests of [start, end): the operator's (reads, writes), and others'."""
    counts = RequestCounts(complete=source.complete_since(start))
    for request in source.requests(start, end):
        if not is_operator(request):
            counts.others += 1
            counts.other_agents[request.user_agent or "(none)"] += 1
            continue
        if request.method in ("GET", "HEAD", "OPTIONS"):
            counts.reads += 1
        else:
            counts.writes += 1
        watch = "watch=true" in request.query or "watch=1" in request.query or "/watch/" in request.path
        counts.watches += watch
        counts.conflicts += request.status == 409
        counts.leases += "/leases" in request.path
        counts.kinds[f"{request.method} {_resource_of(request.path, watch)}"] += 1
    return counts


def _resource_of(path: str, watch: bool) -> str:
    """``/apis/apps/v1/namespaces/ns/deployments/web`` -> ``deployments (one)``; lists and watches too."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        parts = parts[2:]
    elif parts[:1] == ["apis"]:
        parts = parts[3:]
    if parts[:1] == ["namespaces"] and len(parts) >= 3:
        parts = parts[2:]
    if not parts:
        return path
    if len(parts) == 1:
        return f"{parts[0]} ({'watch' if watch else 'list'})"
    return f"{parts[0]}{'/' + parts[2] if len(parts) > 2 else ''} (one)"


# ----- Prometheus -----


def prometheus_queries(url: str) -> float:
    """Instant queries Prometheus has served so far (its own counter, all status codes)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def prometheus_value(url: str, promql: str) -> float | None:
    """An instant query's single value (None: no data, or no answer)."""
    query = urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=10) as response:
            result = json.load(response)["data"]["result"]
    except (OSError, ValueError, KeyError):
        return None
    return float(result[0]["value"][1]) if result else None


# ----- Processes: CPU and memory from /proc -----


class ProcStat(NamedTuple):
    ppid: int
    comm: str
    cpu: float  # user+sys seconds
    hwm_mb: float  # VmHWM


def read_proc(pid: int) -> ProcStat | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    hwm = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return ProcStat(int(fields[1]), comm, cpu, int(hwm[1]) / 1024 if hwm else 0.0)


def all_procs() -> dict[int, ProcStat]:
    procs: dict[int, ProcStat] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read_proc(int(entry))
            if stat is not None:
                procs[int(entry)] = stat
    return procs


def descendants(root: int, procs: dict[int, ProcStat]) -> set[int]:
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, stat in procs.items() if stat.ppid in frontier} - found
        found |= frontier
    return found


@dataclass
class Usage:
    """CPU seconds so far, and the peak RSS, of a process and of its descendants."""

    cpu: float = 0.0
    hwm_mb: float = 0.0
    children_cpu: float = 0.0
    children_hwm_mb: float = 0.0  # the largest child's peak
    children: int = 0  # descendants ever seen


class ProcessSampler:
    """Samples a process and its descendants every half second (children may come and go)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._children: dict[int, ProcStat] = {}  # the last sample of every descendant ever seen
        self._own = read_proc(pid) or ProcStat(0, "", 0.0, 0.0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scale-bench-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()

    def sample(self) -> Usage:
        procs = all_procs()
        with self._lock:
            own = procs.get(self.pid)
            if own is not None:
                self._own = own
            for pid in descendants(self.pid, procs):
                self._children[pid] = procs[pid]
            children = list(self._children.values())
            return Usage(
                cpu=self._own.cpu,
                hwm_mb=self._own.hwm_mb,
                children_cpu=sum(c.cpu for c in children),
                children_hwm_mb=max((c.hwm_mb for c in children), default=0.0),
                children=len(children),
            )

    def child_pids(self) -> list[int]:
        with self._lock:
            return list(self._children)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def prometheus_pid() -> int | None:
    procs = all_procs()
    mine = descendants(os.getpid(), procs)
    return next((pid for pid in mine if procs[pid].comm == "prometheus"), None)


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all CPUs, from /proc/stat): not idle, not iowait."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def thread_cpu(native_id: int | None) -> float:
    """User+sys seconds of one of this process' threads."""
    if native_id is None:
        return 0.0
    try:
        stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Neighbours(NamedTuple):
    """CPU seconds so far of what shares the machine with the operator."""

    bench: float = 0.0  # this whole process: the sandbox (API server, simulators, exporter) and the bench
    loop: float = 0.0  # the sandbox's event-loop thread alone: the API server, the store, both simulators
    prometheus: float = 0.0
    machine: float = 0.0  # every CPU of the machine, busy (all processes, this bench's included)

    @staticmethod
    def now(prometheus: int | None) -> Neighbours:
        loop = next((t.native_id for t in threading.enumerate() if t.name == "sandbox-apiserver"), None)
        own = read_proc(os.getpid())
        prom = read_proc(prometheus) if prometheus else None
        return Neighbours(
            own.cpu if own else 0.0, thread_cpu(loop), prom.cpu if prom else 0.0, machine_busy()
        )

    def minus(self, other: Neighbours) -> Neighbours:
        return Neighbours(*(a - b for a, b in zip(self, other, strict=True)))


# ----- The operator, in its own process -----


class OperatorProcess:
    """``sluice run`` against the sandbox, its output in a log file; stopped by its own pid."""

    def __init__(self, kubeconfig: Path, prometheus_url: str, metric_hosts: Sequence[str], log: Path) -> None:
        self.log = log
        command = [
            sys.executable,
            "-c",
            "import sys; from operators.cli import main; sys.exit(main(sys.argv[1:]))",
            "run",
            "--all-namespaces",
            f"--kubeconfig={kubeconfig}",
            f"--prometheus-url={prometheus_url}",
            "--liveness=off",
            "--no-webhook",
            *(f"--metric-hosts={host}" for host in metric_hosts),
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log.open("ab") as out:
            # A session of its own: a Ctrl-C in the terminal reaches this bench only, which stops it.
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,
            )  # fmt: skip
        self.sampler = ProcessSampler(self.process.pid)

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"the operator exited with code {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        children = self.sampler.child_pids()
        self.sampler.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for pid in children:  # render workers end with the operator; any left over go now
            stat = read_proc(pid)
            if stat is not None and stat.ppid == self.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


# ----- Following the Rollouts through a watch -----


class CheckRecord(NamedTuple):
    made: float  # lastCheck.time - due
    recorded: float  # seen in status - due


@dataclass
class Track:
    """One Rollout as the watch saw it."""

    status: dict[str, Any] = field(default_factory=dict)
    generation: int = 0
    # The measured release: the generation and stable revision it starts from, and when.
    release_generation: int | None = None
    old_stable: str | None = None
    released_at: float | None = None
    healthy_at: float | None = None
    failed: str | None = None


class Fleet:
    """What the watch saw of every Rollout; fed on the sandbox's loop, read by the main thread."""

    def __init__(self, spec: RolloutSpec) -> None:
        analysis = spec.strategy.canary.analysis
        assert analysis is not None
        self.analysis = analysis
        self.tracks: dict[str, Track] = {}
        self.checks: list[CheckRecord] = []
        self.undue_checks = 0  # a check recorded with no due time computable (should not happen)
        self.events = 0
        self.changed = threading.Condition()
        # From `quiet_since` on: how many status writes the watch saw, and which fields they changed.
        self.quiet_since: float | None = None
        self.quiet_writes = 0
        self.quiet_fields: Counter[str] = Counter()

    def observe(self, seen: float, event: dict[str, Any]) -> None:
        obj = event.get("object") or {}
        name = (obj.get("metadata") or {}).get("name")
        if event.get("type") not in ("ADDED", "MODIFIED") or not name:
            return
        with self.changed:
            self.events += 1
            track = self.tracks.setdefault(name, Track())
            before, status = track.status, dict(obj.get("status") or {})
            track.generation = int(obj["metadata"].get("generation") or 0)
            if track.release_generation is not None and track.healthy_at is None:
                self._note_check(before, status, seen)
                self._note_outcome(track, status, seen)
            if self.quiet_since is not None and seen >= self.quiet_since and status != before:
                self.quiet_writes += 1
                self.quiet_fields.update(k for k in {*before, *status} if before.get(k) != status.get(k))
            track.status = status
            self.changed.notify_all()

    def _note_check(self, before: dict[str, Any], status: dict[str, Any], seen: float) -> None:
        made = _last_check_time(status)
        if made is None or made == _last_check_time(before):
            return
        previous = AnalysisStatus.model_validate(before.get("analysis") or {})
        due = next_check_at(self.analysis, previous, before.get("weightChangedAt"))
        if due is None:
            self.undue_checks += 1
            return
        self.checks.append(CheckRecord((parse_time(made) - due).total_seconds(), seen - due.timestamp()))

    @staticmethod
    def _note_outcome(track: Track, status: dict[str, Any], seen: float) -> None:
        assert track.release_generation is not None
        current = int(status.get("observedGeneration") or 0) >= track.release_generation
        phase = status.get("phase")
        if current and phase == Phase.HEALTHY and status.get("stableRevision") != track.old_stable:
            track.healthy_at = seen
        elif current and phase in (Phase.DEGRADED, Phase.ABORTED) and track.failed is None:
            track.failed = f"{phase}: {status.get('message', '')}"

    def start_release(self, name: str, generation: int, at: float) -> None:
        with self.changed:
            track = self.tracks.setdefault(name, Track())
            track.release_generation = generation
            track.old_stable = track.status.get("stableRevision")
            track.released_at = at
            track.healthy_at = None
            track.failed = None

    def deployed(self) -> int:
        """Rollouts whose first deployment is Healthy."""
        return sum(
            1
            for t in self.tracks.values()
            if t.status.get("phase") == Phase.HEALTHY and int(t.status.get("observedGeneration") or 0) >= 1
        )

    def released(self) -> int:
        return sum(1 for t in self.tracks.values() if t.healthy_at is not None)

    def failed(self) -> list[str]:
        return [f"{name}: {t.failed}" for name, t in sorted(self.tracks.items()) if t.failed]

    def wait(
        self, done: Callable[[], bool], timeout: float, alive: Callable[[], None], what: Callable[[], str]
    ) -> bool:
        """Wait (woken by the watch, no polling of the API) until `done`; False at the timeout."""
        deadline = time.monotonic() + timeout
        last_report = time.monotonic()
        with self.changed:
            while not done():
                alive()
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 1.0))
                if time.monotonic() - last_report >= 30:
                    last_report = time.monotonic()
                    print(f"    ... {what()}", file=sys.stderr, flush=True)
        return True


def _last_check_time(status: dict[str, Any]) -> str | None:
    check = (status.get("analysis") or {}).get("lastCheck") or {}
    value = check.get("time")
    return str(value) if value else None


async def _follow(sandbox: Sandbox, fleet: Fleet, started: threading.Event) -> None:
    assert sandbox.api is not None
    async with sandbox.api.store.watch("rollouts", NAMESPACE) as events:
        started.set()
        async for event in events:
            fleet.observe(time.time(), event)


class LoopLag:
    """How late the sandbox's event loop wakes a 100 ms sleep: when it is busy, every request waits."""

    PERIOD = 0.1

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (when, seconds late)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.PERIOD)
            self.samples.append((time.time(), loop.time() - before - self.PERIOD))

    def between(self, start: float, end: float) -> list[float]:
        return [late for when, late in list(self.samples) if start <= when < end]


# ----- One size -----


@dataclass
class Result:
    n: int
    ideal: float
    pairs: int
    initial_seconds: float | None = None
    release_seconds: float | None = None
    released: int = 0
    failed: list[str] = field(default_factory=list)
    patch_spread: float = 0.0
    per_rollout: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)
    checks: list[CheckRecord] = field(default_factory=list)
    undue_checks: int = 0
    steps: int = 0
    release_requests: RequestCounts = field(default_factory=RequestCounts)
    tail_requests: RequestCounts = field(default_factory=RequestCounts)
    tail_seconds: float = 0.0
    quiet_requests: RequestCounts | None = None
    quiet_seconds: float = 0.0
    release_queries: float = 0.0
    release_intervals: float = 0.0
    quiet_queries: float = 0.0
    quiet_intervals: float = 0.0
    release_cpu: float = 0.0
    release_children_cpu: float = 0.0
    quiet_cpu: float = 0.0
    quiet_children_cpu: float = 0.0
    usage: Usage = field(default_factory=Usage)
    neighbours_release: Neighbours = field(default_factory=Neighbours)
    neighbours_quiet: Neighbours = field(default_factory=Neighbours)
    request_source: str = ""
    loop_lag: list[float] = field(default_factory=list)
    scrapes_failed: float | None = None  # Prometheus' scrapes of the sandbox that failed, during the release
    scrape_seconds_max: float | None = None
    quiet_status_writes: int = 0
    quiet_status_fields: Counter[str] = field(default_factory=Counter)


def run_size(n: int, args: argparse.Namespace, workdir: Path) -> Result:
    spec = RolloutSpec.model_validate(rollout_body("probe", args, "app:1")["spec"])
    interval = parse_duration(args.interval).total_seconds()
    result = Result(n=n, ideal=ideal_release_seconds(spec, args.ready_delay), pairs=len(metric_pairs(spec)))
    result.steps = len(spec.strategy.canary.effective_steps())
    names = [f"r{i:05d}" for i in range(n)]
    options = SandboxOptions(
        kubeconfig=workdir / f"kubeconfig-{n}",
        ready_delay=args.ready_delay,
        requests_per_second=args.rps,
        scrape_interval=args.scrape_interval,
        run_operator=False,
    )
    sandbox = Sandbox(options)
    operator: OperatorProcess | None = None
    source: RequestSource | None = None
    follower: Future[None] | None = None
    lagger: Future[None] | None = None
    try:
        sandbox.start()
        assert sandbox.api is not None
        api = sandbox.api
        source = request_source(sandbox)
        result.request_source = source.description
        fleet = Fleet(spec)
        watching = threading.Event()
        follower = asyncio.run_coroutine_threadsafe(_follow(sandbox, fleet, watching), api.loop)
        lag = LoopLag()
        lagger = asyncio.run_coroutine_threadsafe(lag.run(), api.loop)
        if not watching.wait(10):
            raise RuntimeError("the watch on Rollouts did not start")
        log = Path(args.operator_log or workdir / f"operator-{n}.log")
        operator = OperatorProcess(options.kubeconfig, sandbox.prometheus_url, options.metric_hosts, log)
        print(f"  N={n}: sandbox at {api.url}, operator pid {operator.pid} (log {log})", flush=True)

        async def create_all() -> None:
            await api.store.create("namespaces", {"metadata": {"name": NAMESPACE}})
            for name in names:
                await api.store.create("rollouts", rollout_body(name, args, "app:1"), NAMESPACE)

        started = time.time()
        api.run(create_all(), timeout=None)
        if not fleet.wait(
            lambda: fleet.deployed() >= n,
            args.timeout,
            operator.check_alive,
            lambda: f"first deployment: {fleet.deployed()}/{n} Healthy",
        ):
            raise RuntimeError(f"only {fleet.deployed()}/{n} Rollouts were first deployed in {args.timeout}s")
        result.initial_seconds = time.time() - started
        print(f"  N={n}: first deployment of all in {result.initial_seconds:.1f}s", flush=True)
        time.sleep(args.settle_seconds)  # let the first deployment's last passes end

        # The release: every template changes at once (one coroutine on the sandbox's loop).
        patched: dict[str, tuple[float, int]] = {}

        async def release_all() -> None:
            for name in names:
                at = time.time()
                # A merge patch replaces a list whole: send the complete template, with the new image.
                patch = {"spec": {"template": rollout_body(name, args, "app:2")["spec"]["template"]}}
                obj = await api.store.patch("rollouts", NAMESPACE, name, patch)
                patched[name] = (at, int(obj["metadata"]["generation"]))

        usage_before = operator.sampler.sample()
        prom_pid = prometheus_pid()
        neighbours_before = Neighbours.now(prom_pid)
        queries_before = prometheus_queries(sandbox.prometheus_url)
        source.reset()  # the bounded request log keeps the release and what follows
        # Marked before the patches land, so the watch attributes every event after them.
        release_start = time.time()
        for name in names:
            fleet.start_release(name, generation=2, at=release_start)
        api.run(release_all(), timeout=None)
        result.patch_spread = max(at for at, _ in patched.values()) - release_start
        with fleet.changed:
            for name, (at, generation) in patched.items():
                fleet.tracks[name].release_generation = generation
                fleet.tracks[name].released_at = at
        completed = fleet.wait(
            lambda: fleet.released() + len(fleet.failed()) >= n,
            args.timeout,
            operator.check_alive,
            lambda: f"release: {fleet.released()}/{n} Healthy",
        )
        with fleet.changed:
            ends = [t.healthy_at for t in fleet.tracks.values() if t.healthy_at is not None]
            release_end = max(ends) if completed and ends else time.time()
            result.released = len(ends)
            result.failed = fleet.failed()
            result.per_rollout = [
                t.healthy_at - t.released_at
                for t in fleet.tracks.values()
                if t.healthy_at is not None and t.released_at is not None
            ]
            result.checks = list(fleet.checks)
            result.undue_checks = fleet.undue_checks
            statuses = {name: dict(t.status) for name, t in fleet.tracks.items()}
        if completed and not result.failed:
            result.release_seconds = release_end - release_start
        result.stages = release_stages(statuses, patched, args)
        usage_release = operator.sampler.sample()
        result.neighbours_release = Neighbours.now(prom_pid).minus(neighbours_before)
        result.release_cpu = usage_release.cpu - usage_before.cpu
        result.release_children_cpu = usage_release.children_cpu - usage_before.children_cpu
        result.release_queries = prometheus_queries(sandbox.prometheus_url) - queries_before
        result.release_intervals = (release_end - release_start) / interval
        result.release_requests = count_requests(source, release_start, release_end)
        result.loop_lag = lag.between(release_start, release_end)
        window = math.ceil(release_end - release_start)
        result.scrapes_failed = prometheus_value(
            sandbox.prometheus_url, f"sum(count_over_time(up[{window}s])) - sum(sum_over_time(up[{window}s]))"
        )
        result.scrape_seconds_max = prometheus_value(
            sandbox.prometheus_url, f"max(max_over_time(scrape_duration_seconds[{window}s]))"
        )
        print(
            f"  N={n}: release done ({result.released}/{n} Healthy, {len(result.failed)} failed) "
            f"in {release_end - release_start:.1f}s",
            flush=True,
        )

        if completed and not result.failed and args.quiet_seconds > 0:
            time.sleep(args.settle_seconds)
            quiet_start = time.time()
            result.tail_seconds = quiet_start - release_end
            result.tail_requests = count_requests(source, release_end, quiet_start)
            queries_quiet = prometheus_queries(sandbox.prometheus_url)
            with fleet.changed:
                fleet.quiet_since = quiet_start
            usage_quiet = operator.sampler.sample()
            neighbours_quiet = Neighbours.now(prom_pid)
            deadline = time.monotonic() + args.quiet_seconds
            while time.monotonic() < deadline:
                operator.check_alive()
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            quiet_end = time.time()
            result.quiet_seconds = quiet_end - quiet_start
            result.quiet_requests = count_requests(source, quiet_start, quiet_end)
            with fleet.changed:
                result.quiet_status_writes = fleet.quiet_writes
                result.quiet_status_fields = Counter(fleet.quiet_fields)
            result.quiet_queries = prometheus_queries(sandbox.prometheus_url) - queries_quiet
            result.quiet_intervals = result.quiet_seconds / interval
            usage_end = operator.sampler.sample()
            result.quiet_cpu = usage_end.cpu - usage_quiet.cpu
            result.quiet_children_cpu = usage_end.children_cpu - usage_quiet.children_cpu
            result.neighbours_quiet = Neighbours.now(prom_pid).minus(neighbours_quiet)
        result.usage = operator.sampler.sample()
        return result
    except Exception:
        if operator is not None:
            print(f"  operator log tail ({operator.log}):\n{operator.log_tail()}", file=sys.stderr)
        raise
    finally:
        if follower is not None:
            follower.cancel()
        if lagger is not None:
            lagger.cancel()
        if operator is not None:
            operator.stop()
        if source is not None:
            source.close()
        sandbox.stop()


def release_stages(
    statuses: dict[str, dict[str, Any]], patched: dict[str, tuple[float, int]], args: argparse.Namespace
) -> dict[str, list[float]]:
    """Where each Rollout's release lost time, from its status history (the operator's own clock).

    Each stage's excess over the ideal, measured from the actual end of the stage before it:
    the spec change noticed (release started), the canary's pods ready and the weight set, the
    first check passed at that weight (step done), the pause over, and the promotion rolled out.
    """
    interval = parse_duration(args.interval).total_seconds()
    pause = parse_duration(args.pause).total_seconds()
    ideal = {
        "release started": 0.0,
        "weight set": args.ready_delay,
        "step 1 done (analysis)": interval,
        "step 2 done (pause)": pause,
        "promoted": args.ready_delay,
    }
    stages: dict[str, list[float]] = {name: [] for name in ideal}
    for name, status in statuses.items():
        if name not in patched:
            continue
        times = _history_times(status.get("history") or [])
        if times is None:
            continue
        previous = patched[name][0]
        for (stage, allowed), at in zip(ideal.items(), times, strict=True):
            stages[stage].append(at - previous - allowed)
            previous = at
    return stages


def _history_times(history: list[dict[str, Any]]) -> list[float] | None:
    """The times of release-started, set-weight, step, step, promoted (history is newest first)."""
    wanted = ["release-started", "set-weight", "step", "step", "promoted"]
    entries = [e for e in reversed(history) if e.get("action") in set(wanted)]
    for start in range(len(entries) - len(wanted), -1, -1):
        window = entries[start : start + len(wanted)]
        if [e.get("action") for e in window] == wanted:
            return [parse_time(str(e["time"])).timestamp() for e in window]
    return None


# ----- Printing -----


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest rank: the smallest value with at least `fraction` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def spread(values: Sequence[float], unit: str = "s") -> str:
    if not values:
        return "n/a"
    p50, p95, top = percentile(values, 0.5), percentile(values, 0.95), max(values)
    return f"{p50:.2f} / {p95:.2f} / {top:.2f}{unit}"


def row(label: str, value: str, target: str = "", ratio: str = "") -> None:
    print(f"  {label:<46} {value:<36} {target:<16} {ratio}".rstrip())


def note(text: str) -> None:
    print(f"  {'':<46} {text}")


def per(count: float, divisor: float) -> float:
    return count / divisor if divisor else math.nan


def print_result(result: Result, args: argparse.Namespace) -> None:
    n, ideal = result.n, result.ideal
    print()
    print(
        f"N = {n} Rollouts: steps setWeight {args.weight} + pause {args.pause}, "
        f"analysis every {args.interval} (2 metrics, minChecksPerStep 1), {args.replicas} replicas, "
        f"pods ready after {args.ready_delay:g}s; {os.cpu_count()} CPUs"
    )
    row("", "measured", "target", "vs target")

    # Time to Healthy
    if result.release_seconds is not None:
        ratio = result.release_seconds / ideal
        row(
            "all Healthy after the template change",
            f"{result.release_seconds:.1f}s = {ratio:.2f}x ideal ({ideal:.1f}s)",
            f"<= {TARGET_RATIO}x ideal",
            f"{ratio / TARGET_RATIO:.2f}x",
        )
    else:
        row(
            "all Healthy after the template change",
            f"NOT REACHED: {result.released}/{n} Healthy, {len(result.failed)} failed",
            f"<= {TARGET_RATIO}x ideal",
        )
        for line in result.failed[:5]:
            note(line)
    row("  one Rollout, p50 / p95 / max", spread(result.per_rollout))
    note(f"(the {n} template changes were written within {result.patch_spread:.2f}s)")
    for stage, excess in result.stages.items():
        row(f"  beyond ideal: {stage}", spread(excess))

    # Check lateness
    made = [c.made for c in result.checks]
    recorded = [c.recorded for c in result.checks]
    row(
        "check lateness as made, p50 / p95 / max",
        spread(made),
        f"p95 <= {TARGET_LATENESS_P95:g}s",
        f"{percentile(made, 0.95) / TARGET_LATENESS_P95:.2f}x" if made else "",
    )
    note(f"({len(made)} checks)")
    row("check lateness as recorded, p50 / p95 / max", spread(recorded))
    if result.undue_checks:
        row("checks with no due time", str(result.undue_checks))

    # API requests
    release = result.release_requests
    steps = n * result.steps
    row(
        "API requests / Rollout / step (release)",
        f"{per(release.operator, steps):.1f}: reads {per(release.reads, steps):.1f}, "
        f"writes {per(release.writes, steps):.1f}",
    )
    note(
        f"({release.operator} in all over {result.steps} steps x {n}; {release.watches} watches, "
        f"{release.conflicts} answered 409)"
    )
    note(_top(release.kinds))
    if not release.complete:
        note("(the sandbox's request log dropped some of these: a lower bound)")
    if result.tail_seconds:
        row(f"  in the {result.tail_seconds:.0f}s after all Healthy", f"{result.tail_requests.operator}")
    quiet = result.quiet_requests
    if quiet is not None:
        minutes = result.quiet_seconds / 60
        row(
            "API requests / Rollout / quiet minute",
            f"{per(quiet.operator, n * minutes):.2f}: reads {per(quiet.reads, n * minutes):.2f}, "
            f"writes {per(quiet.writes, n * minutes):.2f}",
            f"{TARGET_QUIET_REQUESTS:g}",
        )
        row(
            "API requests / quiet minute, all Rollouts",
            f"{per(quiet.operator, minutes):.1f} ({quiet.operator} in {result.quiet_seconds:.0f}s)",
            f"{TARGET_QUIET_REQUESTS:g}",
        )
        if quiet.kinds:
            note(_top(quiet.kinds))
        if result.quiet_status_writes:
            fields = ", ".join(f"{k} {c}" for k, c in result.quiet_status_fields.most_common(5))
            note(
                f"(Rollout status writes seen in the quiet period: {result.quiet_status_writes}; "
                f"fields changed: {fields})"
            )
        if quiet.leases:
            note(
                f"(of which Leases, i.e. leader election: {per(quiet.leases, minutes):.1f}/min; without them "
                f"{per(quiet.operator - quiet.leases, n * minutes):.2f} per Rollout per minute)"
            )
    for counts, when in ((release, "release"), (quiet, "quiet")):
        if counts is not None and counts.others:
            agents = ", ".join(f"{a} x{c}" for a, c in counts.other_agents.most_common(3))
            row(f"  not the operator's ({when})", f"{counts.others}", "", agents)

    # Prometheus
    queries = per(result.release_queries, result.release_intervals)
    row(
        "Prometheus queries / interval (release)",
        f"{queries:.1f} ({result.release_queries:.0f} in {result.release_intervals:.1f} intervals)",
        f"{result.pairs} (pairs)",
        f"{per(queries, result.pairs):.2f}x",
    )
    if quiet is not None:
        row(
            "Prometheus queries / interval (quiet)",
            f"{per(result.quiet_queries, result.quiet_intervals):.1f}",
        )

    # The operator's process
    windows = [("release", result.release_seconds or 0.0, result.release_cpu, result.release_children_cpu)]
    if quiet is not None:
        windows.append(("quiet", result.quiet_seconds, result.quiet_cpu, result.quiet_children_cpu))
    for when, seconds, cpu, children in windows:
        if seconds:
            row(
                f"operator CPU ({when})",
                f"{cpu / seconds:.2f} cores ({cpu:.1f}s)",
                "2 cores",
                f"render workers {children / seconds:.2f} cores ({children:.1f}s)",
            )
    usage = result.usage
    row(
        "operator peak RSS (VmHWM)",
        f"{usage.hwm_mb:.0f} MB",
        f"< {TARGET_RSS_MB:.0f} MB",
        f"{usage.hwm_mb / TARGET_RSS_MB:.2f}x",
    )
    row(
        "  render workers (its children)",
        f"{usage.children}, the largest peaking at {usage.children_hwm_mb:.0f} MB",
        "",
        f"CPU {usage.children_cpu:.1f}s in all",
    )

    # What shares the machine
    neighbours = [("release", result.neighbours_release, result.release_seconds or 0.0, windows[0][2:])]
    if quiet is not None:
        neighbours.append(("quiet", result.neighbours_quiet, result.quiet_seconds, windows[1][2:]))
    for when, shared, seconds, (own, children) in neighbours:
        if seconds:
            others = shared.machine - shared.bench - shared.prometheus - own - children
            row(
                f"context: cores used ({when})",
                f"sandbox {shared.bench / seconds:.2f} (its loop {shared.loop / seconds:.2f})",
                "",
                f"Prometheus {shared.prometheus / seconds:.2f}, all else {others / seconds:.2f}",
            )
    if result.loop_lag:
        row("context: sandbox loop lag p50 / p95 / max", spread(result.loop_lag))
    if result.scrapes_failed is not None:
        slowest = "n/a" if result.scrape_seconds_max is None else f"{result.scrape_seconds_max:.2f}s"
        row(
            "context: Prometheus scrapes failed (release)",
            f"{result.scrapes_failed:.0f}, slowest scrape {slowest}",
            f"scrape every {args.scrape_interval}",
        )
    print(f"  (API requests from {result.request_source})")
    sys.stdout.flush()


def _top(kinds: Counter[str], count: int = 4) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in kinds.most_common(count))


SUMMARY_COLUMNS = (
    ("N", f"targets ({os.cpu_count()} CPUs)"),
    ("Healthy/ideal", f"<= {TARGET_RATIO}x"),
    ("late p95 made", f"<= {TARGET_LATENESS_P95:g}s"),
    ("late p95 recorded", ""),
    ("req/Rollout/step", ""),
    ("req/Rollout/quiet min", f"{TARGET_QUIET_REQUESTS:g}"),
    ("queries/interval", "= pairs"),
    ("CPU cores", "<= 2"),
    ("RSS MB", f"< {TARGET_RSS_MB:.0f}"),
)


def print_summary(results: list[Result]) -> None:
    rows = [[title for title, _ in SUMMARY_COLUMNS]]
    for r in results:
        made = [c.made for c in r.checks]
        recorded = [c.recorded for c in r.checks]
        quiet = r.quiet_requests
        rows.append(
            [
                str(r.n),
                f"{r.release_seconds / r.ideal:.2f}x" if r.release_seconds else "not reached",
                f"{percentile(made, 0.95):.2f}s" if made else "n/a",
                f"{percentile(recorded, 0.95):.2f}s" if recorded else "n/a",
                f"{per(r.release_requests.operator, r.n * r.steps):.1f}",
                f"{per(quiet.operator, r.n * r.quiet_seconds / 60):.2f}" if quiet else "n/a",
                f"{per(r.release_queries, r.release_intervals):.1f} (pairs {r.pairs})",
                f"{r.release_cpu / r.release_seconds:.2f}" if r.release_seconds else "n/a",
                f"{r.usage.hwm_mb:.0f}",
            ]
        )
    rows.append([target for _, target in SUMMARY_COLUMNS])
    widths = [max(len(line[i]) for line in rows) for i in range(len(SUMMARY_COLUMNS))]
    print()
    print("summary")
    for line in rows:
        print("  " + "  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))


# ----- Command line -----


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def _duration(text: str) -> str:
    try:
        parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=_sizes, default=[1000], help="numbers of Rollouts (default 1000)")
    parser.add_argument("--interval", type=_duration, default="5s", help="analysis interval (default 5s)")
    parser.add_argument("--pause", type=_duration, default="10s", help="the pause step (default 10s)")
    parser.add_argument("--weight", type=int, default=50, help="the setWeight step (default 50)")
    parser.add_argument("--replicas", type=int, default=2, help="replicas per Rollout (default 2)")
    parser.add_argument(
        "--ready-delay", type=float, default=1.0, help="seconds a sandbox pod takes to be ready (default 1)"
    )
    parser.add_argument(
        "--quiet-seconds", type=float, default=60.0, help="the quiet period after the release (default 60)"
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=5.0,
        help="wait after the first deployment, and after the release before the quiet period (default 5)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="give up waiting for a phase after this (default 600s)"
    )
    parser.add_argument(
        "--rps", type=float, default=50.0, help="simulated requests per second per route (default 50)"
    )
    parser.add_argument("--scrape-interval", default="1s", help="Prometheus scrape interval (default 1s)")
    parser.add_argument("--operator-log", help="write the operator's log here (default: a temporary file)")
    args = parser.parse_args(argv)
    if not 0 < args.weight <= 100:
        parser.error("--weight must be between 1 and 100")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results: list[Result] = []
    with _terminate_as_interrupt(), tempfile.TemporaryDirectory(prefix="sluice-scale-bench-") as tmp:
        try:
            for n in args.sizes:
                print(f"N={n}: starting", flush=True)
                result = run_size(n, args, Path(tmp))
                results.append(result)
                print_result(result, args)
        except KeyboardInterrupt:
            print("\ninterrupted: operator and sandbox stopped", file=sys.stderr)
            code = 130
        except Exception as error:  # the operator died, a phase timed out...: report what was measured
            print(f"\nN={n}: failed: {error}", file=sys.stderr)
            code = 1
        else:
            code = 0
    if results:
        print_summary(results)
    return code


if __name__ == "__main__":
    sys.exit(main())
