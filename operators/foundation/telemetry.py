"""The operator's own metrics (prometheus-client), and the /metrics endpoint that serves them.

Every series the operator exports is defined here, in the process' default registry (so the
client's process_* and python_* collectors come along: memory, CPU, open files). The shell
updates them: the Rollout reconciler (operators/rollout/telemetry.py), the release loops, the
API client (foundation/cluster.py) and the analysis queries; the pure engine never does.

Labels are bounded: namespace, Rollout and metric names, phases, outcomes, HTTP methods and
codes. Never a value or a message: each distinct label value is a series kept in memory here
and in Prometheus.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics, start_http_server

# No *_created series beside each counter and histogram: twice the series, for a start time that
# Prometheus' rate() and increase() never need.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus-client

PREFIX = "sluice"
ROLLOUT_LABELS = ("namespace", "rollout")

ROLLOUT_PHASE = Gauge(
    f"{PREFIX}_rollout_phase",
    "1 for the Rollout's current phase, 0 for the others.",
    [*ROLLOUT_LABELS, "phase"],
)
ROLLOUT_INFO = Gauge(
    f"{PREFIX}_rollout_info",
    "Always 1: the Rollout's strategy and the revisions it runs, as labels.",
    [*ROLLOUT_LABELS, "strategy", "stable_revision", "canary_revision"],
)
CANARY_WEIGHT = Gauge(
    f"{PREFIX}_rollout_canary_weight",
    "The canary's share of the traffic, in percent (blue-green: 100 once switched).",
    ROLLOUT_LABELS,
)
CURRENT_STEP = Gauge(
    f"{PREFIX}_rollout_step",
    "The index of the current step of the release (blue-green: of its stage); -1 with none under way.",
    ROLLOUT_LABELS,
)
ANALYSIS_CHECKS = Counter(
    f"{PREFIX}_analysis_checks",
    "Analysis results by metric and outcome (Passed, Failed, Inconclusive, Error).",
    [*ROLLOUT_LABELS, "metric", "outcome"],
)
ANALYSIS_QUERY_DURATION = Histogram(
    f"{PREFIX}_analysis_query_duration_seconds",
    "From asking a metrics provider for a value to its answer (or failure).",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RELEASES_FINISHED = Counter(
    f"{PREFIX}_releases_finished",
    "Releases that ended, by outcome: promoted, rolled_back (analysis or deadline), aborted (by a person).",
    [*ROLLOUT_LABELS, "outcome"],
)
RECONCILE_DURATION = Histogram(
    f"{PREFIX}_reconcile_duration_seconds",
    "One reconciliation pass of an object (a Rollout, an Application, a SidecarSet).",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECONCILE_ERRORS = Counter(
    f"{PREFIX}_reconcile_errors",
    "Reconciliation passes that failed with an unexpected error (a lost write race is no error).",
    ["kind"],
)
API_REQUESTS = Counter(
    f"{PREFIX}_kube_api_requests",
    "Requests of the operator's own Kubernetes client by HTTP method and status code "
    "(kopf's watches and finalizer patches are not counted).",
    ["verb", "code"],
)

FINISH_OUTCOMES = ("promoted", "rolled_back", "aborted")


def count_api_request(verb: str, code: int | str) -> None:
    """One request to the Kubernetes API sent by the operator's client; `code` "error" when none came."""
    API_REQUESTS.labels(verb=verb.upper(), code=str(code)).inc()


def observe_query(provider: str, seconds: float) -> None:
    ANALYSIS_QUERY_DURATION.labels(provider=provider).observe(seconds)


@dataclass
class MetricsServer:
    """The /metrics endpoint on its own thread; `port` is the one bound (useful when asked for 0)."""

    host: str
    port: int
    _server: object
    _thread: threading.Thread

    def stop(self) -> None:
        shutdown = getattr(self._server, "shutdown", None)
        close = getattr(self._server, "server_close", None)
        if shutdown is not None:
            shutdown()
        if close is not None:
            close()
        self._thread.join(5)


def serve_metrics(port: int, host: str = "0.0.0.0") -> MetricsServer:
    """Serve every metric above (and the process' own) at http://HOST:PORT/metrics; port 0: a free one.

    Raises OSError naming the address when it cannot be served (e.g. two operators on one host).
    """
    try:
        server, thread = start_http_server(port, addr=host)
    except OSError as err:
        raise OSError(
            err.errno, f"cannot serve /metrics on {host}:{port} ({err.strerror}); choose --metrics-port"
        ) from err
    return MetricsServer(host=host, port=int(server.server_port), _server=server, _thread=thread)
