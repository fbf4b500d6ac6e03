"""Prometheus (and PromQL-compatible servers: Thanos, Mimir, VictoriaMetrics) as a metric provider.

A metric's ``prometheus: {address, timeout}`` block; without an address the
operator's ``--prometheus-url`` is used.
"""

from __future__ import annotations

import ast
import json
import re
import threading
from typing import Any

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from pydantic import Field
from urllib3.util.retry import Retry

from operators.foundation.model import ApiModel, Duration, parse_duration
from operators.metrics.base import ProviderError
from operators.metrics.base import shorten as _shorten


class PrometheusSource(ApiModel):
    address: str | None = Field(
        default=None,
        description="Prometheus base URL. Defaults to the operator's --prometheus-url; "
        "its host must be allowed (sluice run --metric-hosts).",
    )
    timeout: Duration = "10s"


def _root_cause(err: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, e.g. "[Errno 111] Connection refused".

    requests wraps urllib3's MaxRetryError, which wraps NewConnectionError,
    which wraps the OSError: their str() repeats the URL and object reprs.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    deepest: BaseException = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        deepest = current
        reason = getattr(current, "reason", None)
        nested = current.args[0] if current.args and isinstance(current.args[0], BaseException) else None
        candidate = reason if isinstance(reason, BaseException) else nested or current.__cause__
        current = candidate
    text = str(deepest)
    # "<urllib3.connection.HTTPConnection object at 0x7f..>: Failed to establish..." -> the part after it.
    text = re.sub(r"^<[^>]*>:\s*", "", text)
    return _shorten(text or type(deepest).__name__)


_STATUS_ERROR = re.compile(r"^HTTP Status Code (\d+) \((.*)\)$", re.DOTALL)


def _http_error(address: str, err: PrometheusApiClientException) -> ProviderError:
    """Prometheus' own error out of prometheus-api-client's "HTTP Status Code 400 (b'{json}')".

    Only the fields of Prometheus' error API (errorType, error), shortened, are
    kept: whatever else answered (a proxy's page, another service) is described,
    never echoed, since the text ends up in status and Events.
    """
    match = _STATUS_ERROR.match(str(err))
    if not match:
        return ProviderError(f"Prometheus at {address} refused the query")
    status, body_repr = match.groups()
    try:
        body = ast.literal_eval(body_repr)
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        payload = json.loads(text)
    except (ValueError, SyntaxError):
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        kind = payload.get("errorType")
        detail = f"{kind}: {payload['error']}" if isinstance(kind, str) else payload["error"]
        return ProviderError(f"Prometheus at {address} answered HTTP {status}: {_shorten(detail)}")
    return ProviderError(
        f"Prometheus at {address} answered HTTP {status} with a body that is not Prometheus' API"
    )


def _sample_value(address: str, sample: Any) -> float:
    try:
        return float(sample[1])  # "NaN", "+Inf" and "-Inf" parse as floats too
    except (TypeError, ValueError, IndexError):
        raise ProviderError(f"Prometheus at {address} returned a value that is not a number") from None


def _single_value(address: str, result: Any) -> float | None:
    """One number out of /api/v1/query's `data.result` (the client drops `resultType`).

    A scalar is ``[ts, "v"]``; a vector is a list of ``{"metric", "value"}``; a
    matrix (a range selector left unaggregated) has ``values`` instead.
    """
    if not isinstance(result, list):
        raise ProviderError(
            f"Prometheus at {address} returned a result that is neither a vector nor a scalar"
        )
    if len(result) == 2 and not isinstance(result[0], dict):
        if isinstance(result[1], str) and not _looks_numeric(result[1]):
            raise ProviderError("query returned a string, not a number")
        return _sample_value(address, result)
    if not result:
        return None
    if len(result) > 1:
        raise ProviderError(
            f"query returned {len(result)} series; aggregate it to one value, e.g. with sum()"
        )
    series = result[0]
    if not isinstance(series, dict) or "value" not in series:
        raise ProviderError(
            "query returned a range vector; turn it into one value, e.g. with rate() and sum()"
        )
    return _sample_value(address, series["value"])


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _format_timeout(seconds: float) -> str:
    # Prometheus reads durations like "1500ms"; at least 1ms, since 0 would mean "no timeout".
    return f"{max(1, round(seconds * 1000))}ms"


class PrometheusProvider:
    """The `prometheus` metric provider: one HTTP client per address, reused across queries."""

    field = "prometheus"
    config_model = PrometheusSource

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self._headers = headers
        self._clients: dict[str, PrometheusConnect] = {}
        self._lock = threading.Lock()

    def _client(self, address: str) -> PrometheusConnect:
        with self._lock:
            client = self._clients.get(address)
            if client is None:
                # No retries: the client's default (3 retries with backoff, also on 503) would
                # stretch a 10s timeout to a minute. The analysis retries at its next interval,
                # and errorLimit decides how many consecutive errors are too many.
                # read=False makes urllib3 re-raise read errors as they are, so that a read
                # timeout surfaces as requests.Timeout, not as a generic "max retries exceeded".
                retry = Retry(total=0, read=False, raise_on_status=False)
                client = PrometheusConnect(url=address, headers=self._headers or {}, retry=retry)
                self._clients[address] = client
            return client

    def address(self, config: PrometheusSource) -> str | None:
        return config.address

    def timeout_seconds(self, config: PrometheusSource) -> float:
        return parse_duration(config.timeout).total_seconds()

    def query(
        self, config: PrometheusSource, address: str, query: str, timeout_seconds: float
    ) -> float | None:
        return self.query_at(address, query, timeout_seconds)

    def query_at(self, address: str, promql: str, timeout_seconds: float) -> float | None:
        """Query `address` directly (the sandbox and tools use this; the analysis goes through `query`)."""
        address = address.rstrip("/")
        if not re.match(r"^https?://", address):
            raise ProviderError(f"Prometheus address {address!r} must start with http:// or https://")
        try:
            client = self._client(address)
        except ValueError as err:  # urlparse: e.g. "Invalid IPv6 URL"
            raise ProviderError(f"invalid Prometheus address {address!r}: {err}") from None
        try:
            # Both timeouts: the HTTP one bounds a dead network or a hung server, the
            # query one lets Prometheus give up on an expensive query (and say so).
            result = client.custom_query(
                promql,
                params={"timeout": _format_timeout(timeout_seconds)},
                timeout=timeout_seconds,  # type: ignore[arg-type]  # annotated int; requests takes float
            )
        except (requests.JSONDecodeError, KeyError, TypeError):
            # Something answered 200 that is not Prometheus' API (a login page, another service).
            raise ProviderError(
                f"Prometheus at {address} returned a response that is not Prometheus' API"
            ) from None
        except requests.Timeout:
            raise ProviderError(
                f"Prometheus at {address} did not answer within {timeout_seconds:g}s"
            ) from None
        except requests.ConnectionError as err:
            raise ProviderError(f"Prometheus at {address} is unreachable: {_root_cause(err)}") from None
        except requests.RequestException as err:
            raise ProviderError(f"Prometheus at {address} could not be queried: {_root_cause(err)}") from None
        except PrometheusApiClientException as err:
            raise _http_error(address, err) from None
        return _single_value(address, result)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
