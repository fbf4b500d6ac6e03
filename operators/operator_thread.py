"""The operator in a background thread: for `sluice sandbox`, the demo and the tests."""

from __future__ import annotations

import asyncio
import threading

from operators.foundation.telemetry import MetricsServer
from operators.operator import OperatorOptions, run_operator


class OperatorThread:
    """The real Sluice operator (kopf and all) running in its own thread and event loop."""

    def __init__(self, options: OperatorOptions) -> None:
        self.options = options
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        # The port of its /metrics, once started with options.metrics_port set (0: a free one).
        self.metrics_port: int | None = None

    def start(self, timeout: float = 30) -> OperatorThread:
        self._thread = threading.Thread(target=self._main, name="sluice-operator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self.error is not None:
            raise RuntimeError(f"the operator did not start within {timeout}s: {self.error!r}")
        return self

    def _main(self) -> None:
        try:
            asyncio.run(
                run_operator(
                    self.options, stop_flag=self._stop, ready_flag=self._ready, metrics_started=self._serving
                )
            )
        except BaseException as error:  # surfaced to the caller through start()/stop()
            self.error = error
            self._ready.set()

    def _serving(self, server: MetricsServer) -> None:
        self.metrics_port = server.port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"the operator did not stop within {timeout}s")
        if self.error is not None:
            raise RuntimeError(f"the operator failed: {self.error!r}") from self.error
