"""Any HTTP endpoint answering JSON as a metric provider: ``web: {url, method, headers, body, jsonPath}``.

The block says everything (a web metric has no `query`): the operator sends
the request, reads the answer as JSON, and `jsonPath` picks the one number
(``$.data.value``; kubectl's ``{$.data.value}`` or ``{.data.value}`` too). The
path is parsed when the Rollout is, so a typo stops the release before it
starts. The url's host must be an allowed metric host, like any address.

Redirects are not followed: a 3xx is an answer without a value, and a redirect
could point past the allowed hosts (with the block's headers).
"""

from __future__ import annotations

import functools
import json
import math
import threading
from typing import Any, Literal

import requests
import urllib3
from jsonpath_ng import JSONPath
from jsonpath_ng.ext.parser import parse as parse_extended
from pydantic import Field, field_validator
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from operators.foundation.model import ApiModel, Duration, parse_duration
from operators.metrics.base import ProviderError, shorten

# An answer larger than this is not a metric: refused, never read whole into the operator's memory.
MAX_BODY_BYTES = 1024 * 1024
POOL_SIZE = 32  # as many connections as the analysis runs queries at once (operators.analysis.pool)

# jsonpath-ng's parser (ply) keeps state while it parses: one parse at a time.
_PARSE_LOCK = threading.Lock()


def normalized_path(text: str) -> str:
    """A JSONPath as jsonpath-ng reads it: kubectl's ``{$.a.b}`` and ``{.a.b}`` become ``$.a.b``."""
    path = text.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1].strip()
    if path.startswith("."):
        path = "$" + path
    return path


@functools.lru_cache(maxsize=1024)
def compile_path(text: str) -> JSONPath:
    """The parsed path (cached: every check of every Rollout uses its own); ValueError saying why not."""
    path = normalized_path(text)
    if not path:
        raise ValueError("jsonPath is empty")
    try:
        with _PARSE_LOCK:
            return parse_extended(path)
    except Exception as err:  # JSONPathError, or a plain Exception the lexer raises for some characters
        raise ValueError(f"jsonPath {text!r} is not a valid JSONPath: {shorten(str(err), 120)}") from None


class WebSource(ApiModel):
    url: str = Field(
        min_length=1,
        description="The http(s) URL asked; its host must be allowed (sluice run --metric-hosts).",
    )
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict, description="HTTP headers sent with the request.")
    body: str | None = Field(default=None, description="The request's body (with POST), sent as is.")
    json_path: str = Field(
        min_length=1,
        description="Picks the value out of the JSON answer: a JSONPath such as `$.data.value` "
        "(kubectl's `{$.data.value}` is accepted too). It must select one number; nothing is no data.",
    )
    timeout: Duration = "10s"

    @field_validator("json_path")
    @classmethod
    def _parses(cls, value: str) -> str:
        compile_path(value)  # raises ValueError with the reason, reported as an invalid Rollout
        return value


def number_at(document: Any, json_path: str) -> float | None:
    """The one number `json_path` selects in `document`; None when it selects nothing (or null).

    Raises ProviderError when it selects several values or something that is not a number.
    """
    matches = [match.value for match in compile_path(json_path).find(document)]
    if not matches:
        return None
    if len(matches) > 1:
        raise ProviderError(f"jsonPath {json_path} selects {len(matches)} values; it must select one")
    value = matches[0]
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if not math.isnan(number) or value.strip().lower() == "nan":
                return number
    kinds: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
    kind = kinds.get(type(value), type(value).__name__)
    raise ProviderError(f"jsonPath {json_path} selects {kind}, not a number")


class WebProvider:
    """The `web` metric provider: one HTTP session for every URL; thread-safe."""

    field = "web"
    config_model = WebSource
    takes_query = False  # the block names the request; a metric has no query or template

    def __init__(self, pool_size: int = POOL_SIZE) -> None:
        session = requests.Session()
        # Neither ~/.netrc nor the proxy variables, read per request otherwise (see prometheus.py).
        session.trust_env = False
        adapter = HTTPAdapter(pool_maxsize=pool_size, max_retries=Retry(total=0, read=False, redirect=0))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._session = session

    def address(self, config: WebSource) -> str | None:
        return config.url

    def timeout_seconds(self, config: WebSource) -> float:
        return parse_duration(config.timeout).total_seconds()

    def query(self, config: WebSource, address: str, query: str, timeout_seconds: float) -> float | None:
        """The number `config.json_path` picks out of the JSON `address` answers (`query` is unused)."""
        where = shorten(address, 120)
        try:
            response = self._session.request(
                config.method,
                address,
                headers=config.headers,
                data=config.body.encode() if config.body is not None else None,
                timeout=timeout_seconds,
                allow_redirects=False,
                stream=True,
            )
        except requests.Timeout:
            raise ProviderError(f"web metric at {where} did not answer within {timeout_seconds:g}s") from None
        except requests.RequestException as err:
            raise ProviderError(f"web metric at {where} is unreachable: {type(err).__name__}") from None
        with response:
            if not 200 <= response.status_code < 300:
                raise ProviderError(f"web metric at {where} answered HTTP {response.status_code}")
            try:
                raw = response.raw.read(MAX_BODY_BYTES + 1, decode_content=True)
            except (urllib3.exceptions.HTTPError, OSError) as err:  # a connection cut, or too slow, mid-body
                raise ProviderError(
                    f"web metric at {where} broke off its answer: {type(err).__name__}"
                ) from None
        if len(raw) > MAX_BODY_BYTES:
            raise ProviderError(f"web metric at {where} answered more than {MAX_BODY_BYTES} bytes")
        try:
            document = json.loads(raw)
        except ValueError:
            raise ProviderError(f"web metric at {where} did not answer JSON") from None
        return number_at(document, config.json_path)

    def close(self) -> None:
        self._session.close()
