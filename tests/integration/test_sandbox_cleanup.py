"""The sandbox cleans up after itself: its child processes never outlive it, however it ends.

`sluice sandbox` runs as a real process with a real Prometheus (and the operator); stopped by
SIGTERM, or killed by SIGKILL (idle, or in the middle of its shutdown), every process it started
is gone within a deadline. Then the mechanism on its own (`sluice_sandbox.children`): a child
forked for a thread that has ended lives on, and goes when its parent process is killed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from sluice_sandbox.children import dies_with_parent_supported, spawn, stop_process

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not dies_with_parent_supported(), reason="needs Linux's prctl(PR_SET_PDEATHSIG)"),
]

T = TypeVar("T")
START_TIMEOUT = 60.0  # a deadline for slow machines, not an expected duration
GONE_TIMEOUT = 15.0
_SLUICE = "import sys; from operators.cli import main; sys.exit(main(sys.argv[1:]))"


# ----- Processes, as /proc shows them -----


@dataclass(frozen=True)
class Process:
    """A process by pid and start time: a pid reused by a later process is not this one."""

    pid: int
    started: int
    command: str

    @classmethod
    def read(cls, pid: int) -> Process | None:
        fields = _stat(pid)
        if fields is None:
            return None
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            return None
        return cls(pid, int(fields[19]), command)

    def gone(self) -> bool:
        """Exited: no such process, a zombie (awaiting its reaper), or the pid is another's."""
        fields = _stat(self.pid)
        return fields is None or fields[0] in ("Z", "X") or int(fields[19]) != self.started


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command (the state first), None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[Process]:
    """Every living process below `pid` (children of each of its threads, and theirs)."""
    found: list[Process] = []
    parents = [pid]
    while parents:
        parent = parents.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                pids = [int(child) for child in children.read_text().split()]
            except OSError:
                continue
            for child in pids:
                process = Process.read(child)
                if process is not None and not process.gone():
                    found.append(process)
                    parents.append(child)
    return found


def wait_until(what: str, check: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


# ----- `sluice sandbox`, for real -----


@dataclass
class RunningSandbox:
    process: subprocess.Popen[bytes]
    log: Path
    prometheus_url: str
    prometheus: Process

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def sandbox(tmp_path: Path, prometheus_binary: str) -> Iterator[RunningSandbox]:
    """`sluice sandbox` in a process of its own, once its Prometheus answers."""
    log = tmp_path / "sandbox.log"
    command = [sys.executable, "-c", _SLUICE, "sandbox", "--kubeconfig", str(tmp_path / "kubeconfig")]
    with log.open("wb") as out:
        # TMPDIR: what a killed sandbox leaves behind (Prometheus' data) stays in the test's directory.
        env = {**os.environ, "TMPDIR": str(tmp_path)}
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    try:

        def announced() -> str | None:
            if process.poll() is not None:
                raise AssertionError(f"sluice sandbox exited with {process.returncode}:\n{log.read_text()}")
            found = re.search(r"Prometheus:\s+(http://\S+)", log.read_text(errors="replace"))
            return found.group(1) if found else None

        url = wait_until("the sandbox to say where its Prometheus is", announced, START_TIMEOUT)
        wait_until("its Prometheus to answer", lambda: answers(url), START_TIMEOUT)
        prometheus = next(
            (p for p in descendants(process.pid) if Path(p.command.split(" ", 1)[0]).name == "prometheus"),
            None,
        )
        assert prometheus is not None, f"no prometheus below the sandbox: {descendants(process.pid)}"
        yield RunningSandbox(process, log, url, prometheus)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def assert_all_gone(processes: list[Process], sandbox: RunningSandbox) -> None:
    try:
        wait_until(
            "every process the sandbox started to end", lambda: all(p.gone() for p in processes), GONE_TIMEOUT
        )
    except AssertionError:
        left = [p for p in processes if not p.gone()]
        raise AssertionError(f"still running: {left}\nthe sandbox said:\n{sandbox.output()}") from None
    assert not answers(sandbox.prometheus_url), "its Prometheus no longer answers"


def test_sigterm_stops_the_sandbox_and_everything_it_started(sandbox: RunningSandbox) -> None:
    started = descendants(sandbox.process.pid)
    sandbox.process.send_signal(signal.SIGTERM)
    assert sandbox.process.wait(timeout=START_TIMEOUT) == 0, sandbox.output()
    assert_all_gone(started, sandbox)


def test_sigkill_of_the_sandbox_takes_its_prometheus_along(sandbox: RunningSandbox) -> None:
    started = descendants(sandbox.process.pid)
    assert sandbox.prometheus in started
    sandbox.process.kill()
    assert sandbox.process.wait(timeout=START_TIMEOUT) == -signal.SIGKILL
    assert_all_gone(started, sandbox)


def test_sigkill_in_the_middle_of_a_shutdown_takes_its_prometheus_along(sandbox: RunningSandbox) -> None:
    started = descendants(sandbox.process.pid)
    sandbox.process.send_signal(signal.SIGTERM)  # it starts stopping the operator, the slowest part
    sandbox.process.kill()
    assert sandbox.process.wait(timeout=START_TIMEOUT) == -signal.SIGKILL
    assert_all_gone(started, sandbox)


# ----- The mechanism: children.spawn -----


def test_a_child_spawned_for_a_thread_that_ended_lives_on() -> None:
    spawned: list[subprocess.Popen[bytes]] = []
    thread = threading.Thread(target=lambda: spawned.append(spawn(["sleep", "300"])))
    thread.start()
    thread.join()
    native = thread.native_id
    # Linux signals a thread's children as the thread exits, before its /proc entry goes.
    wait_until("the thread to be gone", lambda: not Path(f"/proc/self/task/{native}").exists(), 10)
    [child] = spawned
    stop_process(child, timeout=10)
    assert child.returncode == -signal.SIGTERM, "ended by our SIGTERM, not by its parent thread's end"


_PARENT = textwrap.dedent(
    """
    import sys, threading, time
    from sluice_sandbox.children import spawn

    worker = threading.Thread(target=lambda: print(spawn(["sleep", "300"]).pid, flush=True))
    worker.start()
    worker.join()
    time.sleep(300)
    """
)


def test_a_spawned_child_goes_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, cwd=tmp_path)
    try:
        assert parent.stdout is not None
        child = Process.read(int(parent.stdout.readline()))
        assert child is not None and not child.gone()
        parent.kill()
        parent.wait(timeout=10)
        wait_until("the child to go with its parent", child.gone, GONE_TIMEOUT)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
