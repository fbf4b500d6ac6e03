"""Child processes that never outlive the sandbox, however it ends.

A normal stop ends them (:func:`stop_process`: SIGTERM, then SIGKILL after a bounded wait). So that
they go too when the sandbox cannot stop them (SIGKILL, a crash, a kill during a slow shutdown),
each child asks Linux to kill it when its parent goes: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, made
between fork and exec (a ``preexec_fn``).

The kernel sends that signal when the *thread* that forked the child exits, not the process
(https://man7.org/linux/man-pages/man2/prctl.2.html). A sandbox started from a short-lived thread
(a test fixture's, a CLI helper's) would then lose its children early; so every child is forked by
one daemon thread that lives as long as the process and does nothing else.

Elsewhere than Linux there is no such signal: children end with a normal stop only.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
DEFAULT_STOP_TIMEOUT = 10.0


def _prctl() -> Any:
    """libc's prctl, resolved now: the child, between fork and exec, should only call it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def dies_with_parent_supported() -> bool:
    return _PRCTL is not None


def _die_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGKILL when its parent (thread) ends."""
    prctl = _PRCTL
    # prctl is variadic: pass unsigned longs, not ints whose upper halves would be left undefined.
    args = (ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL), *(ctypes.c_ulong(0),) * 3)

    def preexec() -> None:
        if prctl(*args) != 0:
            os._exit(126)  # no protection: better no child than an orphan for good
        if os.getppid() != parent:
            os._exit(126)  # the parent went between fork and prctl: the signal will not come

    return preexec


class _Forker:
    """The one thread that forks every child (see the module's docs), started on first use."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, job: Callable[[], T]) -> T:
        if threading.current_thread() is self._thread:
            return job()
        future: Future[T] = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sluice-sandbox-forker", daemon=True)
                self._thread.start()
        self._jobs.put((job, future))
        return future.result()

    def _run(self) -> None:
        while True:
            job, future = self._jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except BaseException as error:  # the caller gets it, whatever it is
                    future.set_exception(error)


_FORKER = _Forker()


def spawn(command: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(command, **popen)`` for a child that dies with this process (on Linux)."""
    if "preexec_fn" in popen:
        raise TypeError("spawn() sets preexec_fn itself")

    def start() -> subprocess.Popen[bytes]:
        if _PRCTL is None:
            return subprocess.Popen(list(command), **popen)
        return subprocess.Popen(list(command), preexec_fn=_die_with(os.getpid()), **popen)

    return _FORKER.call(start)


def stop_process(process: subprocess.Popen[Any], timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
    """End a child: SIGTERM, and SIGKILL if it has not exited within ``timeout`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
