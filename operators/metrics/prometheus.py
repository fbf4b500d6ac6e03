"""Prometheus (and PromQL-compatible servers: Thanos, Mimir, VictoriaMetrics) as a metric provider.

A metric's ``prometheus: {address, timeout, headers, auth, tls}`` block;
without an address the operator's ``--prometheus-url`` is used. Credentials
(a bearer token, basic auth) and a CA bundle come from Secrets in the
Rollout's namespace (`operators.metrics.credentials`), bound to the block
before each query; an address gets one session per set of credentials.

One HTTP session per address, shared by every query to it: its connections
are kept alive and pooled (as many as the analysis runs queries at once).
Sessions do not trust the environment per request (``trust_env = False``):
requests would otherwise look up ``~/.netrc`` and the proxy variables on every
query, a file read per check per Rollout. The proxy variables (``HTTPS_PROXY``,
``NO_PROXY``...) and ``REQUESTS_CA_BUNDLE`` are read once, when the address's
session is made; ``~/.netrc`` is never used (a metric's credentials belong in
its block, not in the operator's home directory).

Single queries go through prometheus-api-client's ``PrometheusConnect``, one
per address, given that address's session. Grouped queries (``query_series``)
are the one path sent on the session directly: see ``_post_query``.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from pydantic import Field
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from operators.foundation.model import ApiModel, Duration, parse_duration
from operators.metrics.base import ProviderError, Series
from operators.metrics.base import shorten as _shorten
from operators.metrics.credentials import Auth, Bound, Credentials, SecretReader, Tls, resolve, unbind

# Connections kept per address: at least as many as the analysis sends queries at once
# (operators.analysis.pool), so that none is opened and dropped per query under load.
POOL_SIZE = 32


class PrometheusSource(ApiModel):
    address: str | None = Field(
        default=None,
        description="Prometheus base URL. Defaults to the operator's --prometheus-url; "
        "its host must be allowed (sluice run --metric-hosts).",
    )
    timeout: Duration = "10s"
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra HTTP headers sent with every query, e.g. X-Scope-OrgID for a Mimir, Cortex or "
        "Thanos tenant. Not for secrets: use auth.",
    )
    auth: Auth | None = Field(
        default=None, description="Credentials read from a Secret in the Rollout's namespace."
    )
    tls: Tls | None = Field(default=None, description="The CA bundle an https:// address is verified with.")


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


def _http_error(address: str, status: int, body: bytes) -> ProviderError:
    """Prometheus' own error out of a non-200 answer.

    Only the fields of Prometheus' error API (errorType, error), shortened, are
    kept: whatever else answered (a proxy's page, another service) is described,
    never echoed, since the text ends up in status and Events.
    """
    try:
        payload = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        kind = payload.get("errorType")
        detail = f"{kind}: {payload['error']}" if isinstance(kind, str) else payload["error"]
        return ProviderError(f"Prometheus at {address} answered HTTP {status}: {_shorten(detail)}")
    return ProviderError(
        f"Prometheus at {address} answered HTTP {status} with a body that is not Prometheus' API"
    )


# prometheus-api-client raises every non-200 answer as this text: the status and repr(response.content).
_STATUS_ERROR = re.compile(r"^HTTP Status Code (\d+) \((.*)\)$", re.DOTALL)


def _client_http_error(address: str, err: PrometheusApiClientException) -> ProviderError:
    """`_http_error` out of prometheus-api-client's "HTTP Status Code 400 (b'{json}')".

    The client keeps neither the response nor its status as attributes, only
    this text: the status and the body are read back out of it.
    """
    match = _STATUS_ERROR.match(str(err))
    if not match:
        return ProviderError(f"Prometheus at {address} refused the query")
    status, body_repr = match.groups()
    try:
        body = ast.literal_eval(body_repr)
    except (ValueError, SyntaxError):
        body = b""
    raw = body if isinstance(body, bytes) else str(body).encode()
    return _http_error(address, int(status), raw)


def _unanswered(address: str, timeout_seconds: float, err: requests.RequestException) -> ProviderError:
    """The one-line reason for a query that got no HTTP answer at all."""
    if isinstance(err, requests.Timeout):
        return ProviderError(f"Prometheus at {address} did not answer within {timeout_seconds:g}s")
    if isinstance(err, requests.ConnectionError):
        return ProviderError(f"Prometheus at {address} is unreachable: {_root_cause(err)}")
    return ProviderError(f"Prometheus at {address} could not be queried: {_root_cause(err)}")


def _sample_value(address: str, sample: Any) -> float:
    try:
        return float(sample[1])  # "NaN", "+Inf" and "-Inf" parse as floats too
    except (TypeError, ValueError, IndexError):
        raise ProviderError(f"Prometheus at {address} returned a value that is not a number") from None


def _single_value(address: str, result: Any) -> float | None:
    """One number out of /api/v1/query's `data.result`.

    prometheus-api-client's `custom_query` returns `data.result` only and drops
    `resultType`, so the type is inferred from the shape: a scalar (or a string)
    is ``[ts, "v"]``; a vector is a list of ``{"metric", "value"}``; a matrix (a
    range selector left unaggregated) has ``values`` instead. What inference
    cannot tell apart: an empty matrix from an empty vector (both read as no
    value), and a string result that holds a number from a scalar.
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


def _format_time(at: float) -> str:
    # Prometheus keeps milliseconds; two queries given the same `at` are evaluated at the same instant.
    return f"{at:.3f}"


def _query_params(timeout_seconds: float, at: float | None) -> dict[str, str]:
    """/api/v1/query's parameters besides the query itself.

    Both timeouts are sent: the HTTP one (the request's) bounds a dead network
    or a hung server, this one lets Prometheus give up on an expensive query
    (and say so).
    """
    params = {"timeout": _format_timeout(timeout_seconds)}
    if at is not None:
        params["time"] = _format_time(at)
    return params


def _not_prometheus(address: str) -> ProviderError:
    # Something answered 200 that is not Prometheus' API (a login page, another service).
    return ProviderError(f"Prometheus at {address} returned a response that is not Prometheus' API")


@dataclass(frozen=True)
class _Endpoint:
    """An address' session and the prometheus-api-client client that queries through it."""

    session: requests.Session
    client: PrometheusConnect
    headers: dict[str, str]  # the operator's and the block's, credentials included


class PrometheusProvider:
    """The `prometheus` metric provider: one HTTP session per address, reused across queries.

    Thread-safe. `queries_sent` counts the HTTP requests sent, for the tests
    and the benchmark that check how many queries the analysis costs Prometheus.
    """

    field = "prometheus"
    config_model = PrometheusSource

    def __init__(self, headers: dict[str, str] | None = None, pool_size: int = POOL_SIZE) -> None:
        self._headers = dict(headers or {})
        self._pool_size = pool_size
        # One per address and set of credentials: a tenant's headers are never sent for another's query.
        self._endpoints: dict[tuple[str, str], _Endpoint] = {}
        self._ca_files: list[str] = []
        self._lock = threading.Lock()
        self._sent = 0

    @property
    def queries_sent(self) -> int:
        with self._lock:
            return self._sent

    def _session(self, address: str, credentials: Credentials | None = None) -> requests.Session:
        return self._endpoint(address, credentials or Credentials()).session

    def _endpoint(self, address: str, credentials: Credentials | None = None) -> _Endpoint:
        credentials = credentials or Credentials()
        key = (address, credentials.fingerprint())
        with self._lock:
            endpoint = self._endpoints.get(key)
            if endpoint is None:
                endpoint = self._new_endpoint(address, credentials)
                self._endpoints[key] = endpoint
            return endpoint

    def _new_endpoint(self, address: str, credentials: Credentials) -> _Endpoint:
        problem = _address_problem(address)
        if problem:
            raise ProviderError(f"invalid Prometheus address {address!r}: {problem}")
        session = requests.Session()
        # Read the environment once, here, rather than on every request (see the module's docstring).
        # The client sends each request with verify=session.verify and the session's proxies.
        session.trust_env = False
        session.proxies.update(requests.utils.get_environ_proxies(address))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle
        if credentials.ca_pem is not None:
            session.verify = self._ca_file(credentials.ca_pem)
        headers = {**self._headers, **dict(credentials.headers)}
        if credentials.headers:
            # A redirect would carry the block's headers (a tenant id, a token) to wherever it points,
            # past the allowed hosts: an address with headers is queried where it says, or not at all.
            session.max_redirects = 0
        # No retries: urllib3's usual retries with backoff (also on 503; the client's default is
        # 3 of them) would stretch a 10s timeout to a minute. The analysis retries at its next
        # interval, and errorLimit decides how many consecutive errors are too many. read=False
        # makes urllib3 re-raise read errors as they are, so that a read timeout surfaces as
        # requests.Timeout, not as a generic "max retries exceeded".
        retry = Retry(total=0, read=False, raise_on_status=False)
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self._pool_size, max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        # Neither `proxy=` (the client would replace the session's proxies, read above with it)
        # nor `disable_ssl=` (ignored with a session): both are the session's.
        client = PrometheusConnect(url=address, headers=headers, retry=retry, session=session, method="GET")
        # PrometheusConnect mounts a fresh HTTPAdapter(max_retries=retry) of its own on the
        # address, which requests prefers (longest prefix) to ours: a second, default-sized
        # (10) connection pool per address. Mount ours back on it, so that every query to the
        # address, the client's and the grouped ones, shares the one pool sized for concurrency.
        session.mount(address, adapter)
        return _Endpoint(session, client, headers)

    def _ca_file(self, pem: bytes) -> str:
        # requests verifies against a file, not bytes: one per CA bundle, removed on close().
        # Called with the lock held.
        handle = tempfile.NamedTemporaryFile(prefix="sluice-ca-", suffix=".pem", delete=False)  # noqa: SIM115
        with handle:
            handle.write(pem)
        self._ca_files.append(handle.name)
        return handle.name

    def address(self, config: PrometheusSource | Bound) -> str | None:
        source: PrometheusSource = unbind(config)[0]
        return source.address

    def timeout_seconds(self, config: PrometheusSource | Bound) -> float:
        return parse_duration(unbind(config)[0].timeout).total_seconds()

    def bind(self, config: PrometheusSource, namespace: str, secrets: SecretReader | None) -> Bound:
        """The block with its headers, credentials and CA bundle read from `namespace`."""
        return Bound(config, resolve(namespace, config.headers, config.auth, config.tls, secrets))

    def query(
        self, config: PrometheusSource | Bound, address: str, query: str, timeout_seconds: float
    ) -> float | None:
        return self.query_at(address, query, timeout_seconds, credentials=unbind(config)[1])

    def query_at(
        self,
        address: str,
        promql: str,
        timeout_seconds: float,
        at: float | None = None,
        credentials: Credentials | None = None,
    ) -> float | None:
        """Query `address` directly (the sandbox and tools use this; the analysis goes through `query`).

        `at`: the evaluation time (Unix seconds); None: Prometheus' own now.
        """
        address = _checked(address)
        client = self._endpoint(address, credentials).client
        self._count()
        try:
            result = client.custom_query(
                promql,
                params=_query_params(timeout_seconds, at),
                timeout=timeout_seconds,  # type: ignore[arg-type]  # annotated int; requests takes float
            )
        except (requests.JSONDecodeError, KeyError, TypeError):
            # The client's response.json()["data"]["result"] on a 200 that is not Prometheus' API.
            raise _not_prometheus(address) from None
        except requests.RequestException as err:
            raise _unanswered(address, timeout_seconds, err) from None
        except PrometheusApiClientException as err:
            raise _client_http_error(address, err) from None
        return _single_value(address, result)

    def query_series(
        self, config: PrometheusSource | Bound, address: str, query: str, timeout_seconds: float, at: float
    ) -> list[Series]:
        """Every series of a grouped query at `at` (`GroupingProvider`)."""
        address = _checked(address)
        data = self._post_query(address, query, timeout_seconds, at, unbind(config)[1])
        if data.get("resultType") != "vector":
            kind = data.get("resultType")
            raise ProviderError(
                f"grouped query returned a {kind if isinstance(kind, str) else 'result'}, not a vector"
            )
        result = data.get("result")
        if not isinstance(result, list):
            raise _not_prometheus(address)
        series: list[Series] = []
        for item in result:
            labels = item.get("metric") if isinstance(item, dict) else None
            if not isinstance(labels, dict):
                raise _not_prometheus(address)
            value = _sample_value(address, item.get("value"))
            series.append(({str(name): str(text) for name, text in labels.items()}, value))
        return series

    def _post_query(
        self, address: str, promql: str, timeout_seconds: float, at: float, credentials: Credentials
    ) -> dict[str, Any]:
        """/api/v1/query's `data` for a grouped query, sent on the address' session directly.

        The one query not sent through prometheus-api-client, which cannot do
        what a grouped query needs:

        - keep the query out of the URL: a grouped query names the label values
          of a whole batch of Rollouts, and may outgrow what proxies accept in a
          URL (often 8 KiB, then HTTP 414). The client's method="POST" still
          sends the query as URL parameters (`params=`), with an empty body,
          and has no way to send it as a form;
        - tell a vector from another result type: the client returns
          `data.result` only and drops `resultType`, and an empty matrix (a range
          selector left unaggregated that selects nothing) looks like an empty
          vector. A grouped query has to be refused as a configuration error then,
          not read as "no series".

        Same session, connection pool, timeouts, headers, counting and error
        texts as the client's queries.
        """
        endpoint = self._endpoint(address, credentials)
        self._count()
        try:
            response = endpoint.session.post(
                f"{address}/api/v1/query",
                data={"query": promql, **_query_params(timeout_seconds, at)},
                headers=endpoint.headers,
                timeout=timeout_seconds,
            )
        except requests.RequestException as err:
            raise _unanswered(address, timeout_seconds, err) from None
        if response.status_code != 200:
            raise _http_error(address, response.status_code, response.content)
        try:
            data = response.json()["data"]
        except (requests.JSONDecodeError, KeyError, TypeError):
            raise _not_prometheus(address) from None
        if not isinstance(data, dict):
            raise _not_prometheus(address)
        return data

    def _count(self) -> None:
        with self._lock:
            self._sent += 1

    def close(self) -> None:
        with self._lock:
            endpoints, self._endpoints = list(self._endpoints.values()), {}
            ca_files, self._ca_files = self._ca_files, []
        for endpoint in endpoints:
            endpoint.client.close()  # closes the address' session
        for path in ca_files:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _address_problem(address: str) -> str | None:
    """Why requests could not even parse `address` ("Invalid IPv6 URL", a port out of range), or None."""
    try:
        urlsplit(address).port  # noqa: B018  # urlsplit only splits; reading the port validates it
    except ValueError as err:
        return str(err)
    return None


def _checked(address: str) -> str:
    address = address.rstrip("/")
    if not re.match(r"^https?://", address):
        raise ProviderError(f"Prometheus address {address!r} must start with http:// or https://")
    return address
