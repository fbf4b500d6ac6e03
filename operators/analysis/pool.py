"""Where the analysis' blocking provider calls run: one bounded pool for the whole operator.

A check no longer holds a thread while it waits (`check.start_check` returns a
future): only the HTTP calls themselves do, here. So the number of threads is
bounded by this pool, not by the number of Rollouts being checked, and there
is no pool per check to start and stop. A query blocks a worker for at most
its timeout (`check.MAX_QUERY_SECONDS`).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

# Queries mostly wait on the network: many may be in flight on few cores. Prometheus'
# sessions keep as many connections per address (metrics.prometheus.POOL_SIZE).
QUERY_WORKERS = 32

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def query_pool() -> ThreadPoolExecutor:
    """The process's query pool, created on first use (its threads start only as queries need them)."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=QUERY_WORKERS, thread_name_prefix="sluice-query")
        return _pool
