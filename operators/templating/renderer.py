"""Users' templates rendered in worker processes, bounded in wall time and memory.

Jinja2's sandbox stops attribute escapes, not runaway templates: two nested
``range(100000)`` loops run for minutes, ``'a'|center(300000000)`` takes
gigabytes. Rendered in the operator, on every reconcile pass and in its shared
worker threads, one such template would starve every release or get the
operator OOM-killed. So a `Renderer` sends each template to a small pool of
long-lived worker processes (`worker.py`):

- each worker bounds its own address space (``RLIMIT_AS``) and, as a backstop
  should the operator die mid-render, its CPU time (``RLIMIT_CPU``);
- a render that outlives the wall-time bound gets its worker killed (SIGKILL)
  and replaced, and the caller a one-line `TemplateProblem`, as for a template
  that needs more memory than the bound, or a worker that dies for any other
  reason: the caller never sees anything but text or a `TemplateProblem`;
- outcomes (text or problem) are cached by (kind, source, variables), so the
  same query rendered to validate and again to query costs one render, and a
  hostile template seen on every pass costs its timeout once.

Workers are fresh interpreters running ``operators.templating.worker``:
spawned, never forked from the operator, which has threads. They are not started
through `multiprocessing`'s spawn method because that re-imports the parent's
``__main__`` in the child, which for the ``sluice`` command is the whole operator
(kopf, kubernetes...): about 60 MiB and 0.8 s per worker instead of 22 MiB and 0.15 s.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from operators.templating.sandbox import TemplateProblem, Wording

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
# A worker's address-space bound. Its baseline after importing jinja2 is about 26 MiB of VSZ
# (22 MiB RSS); the largest template that can compile within the default 2s (~300 KB of source)
# peaks near 150 MiB, so this leaves room for anything that can finish in time. (Not 512 MiB:
# the operator's container has 256 Mi in all.)
DEFAULT_MEMORY_LIMIT = 256 * MIB
DEFAULT_TIMEOUT = 2.0
DEFAULT_WORKERS = 2
# CPU seconds per render before the kernel ends a worker the operator could not (SIGXCPU).
DEFAULT_CPU_SECONDS = 10.0
# Outcomes kept: entries, and their text in characters (a component type renders a few KiB).
DEFAULT_CACHE_ENTRIES = 512
DEFAULT_CACHE_CHARS = 8 * MIB
# How long a new worker may take to import jinja2 and say it is ready.
START_TIMEOUT = 15.0
# Beyond the render timeout: how long a caller waits for a free worker.
BUSY_MARGIN = 1.0
# A template that ran out of time is tried again after this long: on an operator starved of CPU
# for a while, an honest template may time out once, and must not stay refused for good.
RETRY_TIMEOUTS_AFTER = 300.0

# Where this `operators` package lives: a worker imports the same code as its parent.
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])
# A worker's first lines. `-P` keeps the working directory off sys.path (no stray jinja2.py);
# the package's directory goes first only when not already there (site-packages stays behind
# the standard library).
_BOOT = """\
import sys
if sys.argv[1] not in sys.path:
    sys.path.insert(0, sys.argv[1])
from operators.templating.worker import main
main(sys.argv[2:])
"""


@dataclass(frozen=True)
class TemplateKind:
    """What a template is: how problems name it, how long its output may be, its helpers.

    `helpers` are functions the template may call, by name (``fail``); the
    worker has them (`worker.HELPERS`), since functions do not cross processes.
    """

    wording: Wording
    max_output: int
    helpers: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Outcome:
    text: str
    problem: bool
    # For a cached outcome that may be worth trying again (a timeout): when, on time.monotonic().
    expires: float | None = None

    def expired(self) -> bool:
        return self.expires is not None and time.monotonic() >= self.expires

    def result(self) -> str:
        if self.problem:
            raise TemplateProblem(self.text)
        return self.text


class _WorkerDied(Exception):
    """A worker ended while rendering, of something other than time or memory; says how."""


class _Worker:
    """One worker process and the socket to it; used by one thread at a time."""

    def __init__(self, memory_limit: int, cpu_seconds: float, start_timeout: float) -> None:
        ours, theirs = socket.socketpair()
        started = time.monotonic()
        try:
            # close_fds (the default): a worker holds no other worker's socket, so each sees EOF.
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-P",
                    "-c",
                    _BOOT,
                    _SOURCE_ROOT,
                    str(theirs.fileno()),
                    str(memory_limit),
                    str(cpu_seconds),
                ],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the worker has its own copy; ours closed lets it see EOF when we go
        self.connection = Connection(ours.detach())
        try:
            if not self.connection.poll(start_timeout):
                raise OSError(f"no answer within {start_timeout:g}s")
            hello = json.loads(self.connection.recv_bytes(4096))
        except (OSError, EOFError, ValueError) as error:
            self.kill()
            raise OSError(f"template worker did not start: {error}") from None
        logger.debug(
            "template worker %d ready in %.2fs: VSZ %.1f MiB, RSS %.1f MiB",
            self.process.pid,
            time.monotonic() - started,
            hello.get("vsz", 0) / MIB,
            hello.get("rss", 0) / MIB,
        )
        self.baseline: dict[str, int] = {"vsz": int(hello.get("vsz", 0)), "rss": int(hello.get("rss", 0))}

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        self.connection.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def ended(self) -> str:
        """How the process ended (it has, or is about to: its socket is closed)."""
        self.connection.close()
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"


class Renderer:
    """Renders templates in a pool of worker processes; safe to call from many threads at once.

    Workers start on first need and live until they fail or `close()`. When every
    worker is busy, callers wait for one (at most `timeout` plus a margin).
    """

    def __init__(
        self,
        *,
        workers: int = DEFAULT_WORKERS,
        timeout: float = DEFAULT_TIMEOUT,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
        cpu_seconds: float = DEFAULT_CPU_SECONDS,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
        cache_chars: int = DEFAULT_CACHE_CHARS,
        start_timeout: float = START_TIMEOUT,
        retry_timeouts_after: float = RETRY_TIMEOUTS_AFTER,
    ) -> None:
        if workers < 1:
            raise ValueError("a renderer needs at least one worker")
        self.workers = workers
        self.timeout = timeout
        self.memory_limit = memory_limit
        self.cpu_seconds = cpu_seconds
        self.cache_entries = cache_entries
        self.cache_chars = cache_chars
        self.start_timeout = start_timeout
        self.retry_timeouts_after = retry_timeouts_after
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(workers)
        self._idle: list[_Worker] = []
        self._live: dict[int, _Worker] = {}  # by pid, idle or busy
        self._closed = False
        self._cache: OrderedDict[bytes, _Outcome] = OrderedDict()
        self._cached_chars = 0
        self._pending: dict[bytes, Future[_Outcome]] = {}
        # What happened so far: workers started, renders stopped for time, renders answered.
        self.started = 0
        self.timeouts = 0
        self.renders = 0

    def worker_pids(self) -> list[int]:
        """The process ids of the workers now alive, idle or busy."""
        with self._lock:
            return sorted(self._live)

    def render(self, kind: TemplateKind, source: str, names: Sequence[str], values: Mapping[str, Any]) -> str:
        """The stripped output of `source` with `values`; raises TemplateProblem (one line) on any problem.

        `names` are the variables the template may use (``canary.service``,
        ``args.<name>``), for refusing other names before rendering. `values` is
        plain data (dicts, lists, str, int, float, bool, None): each top-level
        mapping becomes a `Namespace` named after its variable in the worker.
        """
        payload = json.dumps(
            {
                "kind": [kind.wording.subject, kind.wording.template, kind.max_output, list(kind.helpers)],
                "source": source,
                "names": list(names),
                "values": values,
            },
            ensure_ascii=False,
        ).encode()
        key = hashlib.blake2b(payload, digest_size=32).digest()
        future: Future[_Outcome] = Future()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached.expired():
                self._forget(key)
            elif cached is not None:
                self._cache.move_to_end(key)
                return cached.result()
            pending = self._pending.setdefault(key, future)
        if pending is not future:  # the same render is under way in another thread: its outcome is ours
            return pending.result().result()
        try:
            outcome, keep = self._render(kind, payload)
            if keep:
                self._remember(key, outcome)
            future.set_result(outcome)
        except BaseException as error:
            future.set_exception(error)
            raise
        finally:
            with self._lock:
                del self._pending[key]
        return outcome.result()

    def close(self) -> None:
        """Stop the idle workers now and the busy ones when they finish; later renders are refused."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            self._discard(worker)

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- inside ----------------------------------------------------------------------------------

    def _render(self, kind: TemplateKind, payload: bytes) -> tuple[_Outcome, bool]:
        """(outcome, whether to cache it): passing conditions (busy, shutting down) are not cached."""
        template = kind.wording.template
        if not self._slots.acquire(timeout=self.timeout + BUSY_MARGIN):
            busy = f"{template} could not be rendered: every template worker stayed busy; it will be retried"
            return _Outcome(busy, problem=True), False
        try:
            how = ""
            for attempt in (1, 2):
                worker = self._checkout(fresh=attempt > 1)
                if worker is None:
                    stopping = f"{template} could not be rendered: the operator is stopping"
                    return _Outcome(stopping, problem=True), False
                if isinstance(worker, str):
                    return _Outcome(f"{template} could not be rendered: {worker}", True), False
                try:
                    outcome, alive = self._ask(worker, kind, payload)
                except _WorkerDied as died:
                    # Perhaps not the template's fault (killed from outside, say): once more on a
                    # fresh worker; a second death is the template's.
                    how = str(died)
                    logger.warning("template worker %d ended (%s) on attempt %d", worker.pid, how, attempt)
                    self._discard(worker)
                    continue
                if alive:
                    self._checkin(worker)
                else:
                    self._discard(worker)
                return outcome, True
            return _Outcome(f"{template} could not be rendered: its worker process ended ({how})", True), True
        finally:
            self._slots.release()

    def _checkout(self, fresh: bool) -> _Worker | str | None:
        """An idle worker (unless `fresh`), a new one, None once closed, or why none could be started."""
        while not fresh:
            with self._lock:
                if self._closed:
                    return None
                if not self._idle:
                    break
                worker = self._idle.pop()
            if worker.process.poll() is None:
                return worker
            logger.warning("template worker %d ended while idle (%s)", worker.pid, worker.ended())
            self._discard(worker)
        with self._lock:
            if self._closed:
                return None
        try:
            worker = _Worker(self.memory_limit, self.cpu_seconds, self.start_timeout)
        except OSError as error:
            logger.error("%s", error)
            return str(error)
        with self._lock:
            self.started += 1
            self._live[worker.pid] = worker
        return worker

    def _checkin(self, worker: _Worker) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(worker)
                return
        self._discard(worker)

    def _discard(self, worker: _Worker) -> None:
        """Kill the worker if it still runs, and forget it."""
        worker.kill()
        with self._lock:
            self._live.pop(worker.pid, None)

    def _ask(self, worker: _Worker, kind: TemplateKind, payload: bytes) -> tuple[_Outcome, bool]:
        """(outcome, whether the worker can be used again); raises _WorkerDied."""
        template = kind.wording.template
        # A reply is JSON of at most max_output characters: 6 bytes each at worst (\u0000), plus room.
        max_reply = 6 * kind.max_output + 64 * 1024
        try:
            worker.connection.send_bytes(payload)
            if not worker.connection.poll(self.timeout):
                worker.kill()
                with self._lock:
                    self.timeouts += 1
                logger.warning("template worker %d killed: took longer than %gs", worker.pid, self.timeout)
                return _Outcome(
                    f"{template} took longer than {self.timeout:g}s to render; "
                    "it was stopped (look for a loop that runs too long)",
                    problem=True,
                    expires=time.monotonic() + self.retry_timeouts_after,
                ), False
            reply = json.loads(worker.connection.recv_bytes(max_reply))
        except (EOFError, OSError, ValueError):
            raise _WorkerDied(worker.ended()) from None
        with self._lock:
            self.renders += 1
        if "text" in reply:
            return _Outcome(str(reply["text"]), problem=False), True
        if "problem" in reply:
            return _Outcome(str(reply["problem"]), problem=True), True
        # {"memory": true}: the worker exits after saying so.
        worker.ended()
        message = f"{template} needs more than {self.memory_limit // MIB} MiB to render"
        return _Outcome(message, problem=True), False

    def _remember(self, key: bytes, outcome: _Outcome) -> None:
        with self._lock:
            if key in self._cache:
                return
            self._cache[key] = outcome
            self._cached_chars += len(outcome.text)
            while self._cache and (
                len(self._cache) > self.cache_entries or self._cached_chars > self.cache_chars
            ):
                self._forget(next(iter(self._cache)))

    def _forget(self, key: bytes) -> None:
        """Drop a cached outcome; the caller holds the lock."""
        dropped = self._cache.pop(key)
        self._cached_chars -= len(dropped.text)


_default: Renderer | None = None
_default_lock = threading.Lock()
_exit_registered = False


def default_renderer() -> Renderer:
    """The process's renderer, created on first use and closed when the interpreter exits."""
    global _default, _exit_registered
    with _default_lock:
        if _default is None:
            _default = Renderer()
            if not _exit_registered:
                atexit.register(close)
                _exit_registered = True
        return _default


def render(kind: TemplateKind, source: str, names: Sequence[str], values: Mapping[str, Any]) -> str:
    """`Renderer.render` on the default renderer."""
    return default_renderer().render(kind, source, names, values)


def close() -> None:
    """Stop the default renderer's workers; the next render starts a new renderer."""
    global _default
    with _default_lock:
        renderer, _default = _default, None
    if renderer is not None:
        renderer.close()
