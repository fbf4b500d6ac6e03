"""A real Prometheus server on loopback, for integration tests and local demos.

It runs Debian's (or any) `prometheus` binary with a generated configuration
that scrapes the given targets every second, keeping its TSDB in a temporary
directory. The port is chosen once and kept across stop()/start(), so a test
can take Prometheus down to simulate an outage and bring it back at the same
address, with the data it had.

The process never outlives the one that started it (see `children.py`):
stop() ends it (SIGTERM, then SIGKILL after a bounded wait), and on Linux the
kernel kills it should its parent end without stopping it (killed, crashed).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import yaml

from operators.api.base import parse_duration
from operators.metrics.base import ProviderError
from operators.metrics.prometheus import PrometheusProvider
from sluice_sandbox.children import spawn, stop_process

DEFAULT_BINARY = "/usr/bin/prometheus"
_LOG_TAIL_LINES = 20


class PrometheusNotInstalled(RuntimeError):
    """No prometheus binary on this machine."""


class PrometheusError(RuntimeError):
    """Prometheus did not start, stop, or answer as expected."""


def find_binary(binary: str | None = None) -> str:
    """The prometheus executable: `binary` if given, else from PATH, else Debian's path."""
    candidates = [binary] if binary else [shutil.which("prometheus"), DEFAULT_BINARY]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    where = binary or "PATH or " + DEFAULT_BINARY
    raise PrometheusNotInstalled(
        f"prometheus not found ({where}): apt-get install prometheus, "
        "or point Sluice at an existing server with --prometheus-url"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config(targets: list[str], scrape_interval: str) -> dict[str, object]:
    """prometheus.yml: one job scraping `targets`."""
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "evaluation_interval": scrape_interval,
            # Must not exceed the interval; Prometheus' default (10s) would with 1s scrapes.
            "scrape_timeout": scrape_interval,
        },
        "scrape_configs": [
            {
                "job_name": "sluice-sandbox",
                # Keep the exporter's own namespace/service labels instead of renaming them exported_*.
                "honor_labels": True,
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }


class PrometheusServer:
    """A Prometheus process scraping `targets`, on 127.0.0.1:`port` (a free port by default)."""

    def __init__(
        self,
        targets: list[str],
        scrape_interval: str = "1s",
        port: int | None = None,
        binary: str | None = None,
    ) -> None:
        self.binary = find_binary(binary)
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.port = port or free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="sluice-prometheus-"))
        self._config = self._dir / "prometheus.yml"
        self._config.write_text(yaml.safe_dump(config(self.targets, scrape_interval), sort_keys=False))
        self._log = self._dir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._provider = PrometheusProvider()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        scrape = parse_duration(self.scrape_interval).total_seconds()
        # An instant selector returns a series' last sample for up to the lookback delta
        # (5m by default). Series of a stopped Prometheus have no staleness marker, so
        # after a restart they would linger for 5 minutes; a few scrape intervals is enough.
        lookback = max(5, round(5 * scrape))
        return [
            self.binary,
            f"--config.file={self._config}",
            f"--storage.tsdb.path={self._dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            f"--query.lookback-delta={lookback}s",
            "--log.level=warn",
        ]

    def start(self, timeout: float = 30.0) -> None:
        """Start Prometheus and wait until it is ready; raises PrometheusError with its log if not."""
        if self.running:
            return
        with self._log.open("ab") as log:
            self._process = spawn(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self._dir
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise PrometheusError(
                    f"prometheus exited with code {code} while starting:\n{self.log_tail()}"
                )
            if self._ready():
                return
            time.sleep(0.1)
        self.stop()
        raise PrometheusError(f"prometheus not ready at {self.url} within {timeout:g}s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Prometheus (SIGTERM, then SIGKILL after `timeout`); its data stays for the next start()."""
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, timeout)

    def close(self) -> None:
        """Stop Prometheus and delete its data."""
        self.stop()
        self._provider.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def query(self, promql: str, timeout: float = 5.0) -> float | None:
        """The value of an instant query (None when it selects nothing)."""
        return self._provider.query_at(self.url, promql, timeout)

    def wait_for(self, promql: str, predicate: Callable[[float], bool], timeout: float = 30.0) -> float:
        """Poll `promql` until its value satisfies `predicate`; return that value.

        No data and query errors count as "not yet". At the deadline, raises
        TimeoutError with the last value (or error) seen.
        """
        deadline = time.monotonic() + timeout
        last: str = "no answer yet"
        while True:
            try:
                value = self.query(promql)
            except ProviderError as err:
                last = f"error: {err}"
            else:
                if value is not None and predicate(value):
                    return value
                last = "no data" if value is None else f"{value!r}"
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{promql!r} did not reach the expected value within {timeout:g}s; last: {last}"
                )
            time.sleep(0.2)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A forgotten server must not outlive the tests as an orphan process.
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            process.kill()
