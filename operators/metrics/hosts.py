"""Which addresses the analysis may send requests to: allowed, never assumed.

Anyone who may create a Rollout writes its metrics' addresses, and the
operator sends requests from inside the cluster: without a list, a metric
could make it call any internal service (server-side request forgery). So
the operator only queries hosts it was told to trust: the host of
``--prometheus-url``, plus each ``--metric-hosts HOST[:PORT]``. A host
without a port is allowed on any port.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

FLAG = "--metric-hosts"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class HostPattern:
    host: str
    port: int | None = None  # None: any port

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def parse_host(text: str) -> HostPattern:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT``; raises ValueError saying what is wrong."""
    value = text.strip()
    if not value or "/" in value or "@" in value:
        raise ValueError(f"metric host {text!r} must be HOST or HOST:PORT (no scheme, path or user)")
    parts = urlsplit(f"//{value}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"metric host {text!r} has an invalid port") from None
    if not parts.hostname:
        raise ValueError(f"metric host {text!r} names no host")
    return HostPattern(parts.hostname.lower(), port)


def endpoint_of(url: str) -> tuple[str, int] | None:
    """(host, port) of an http(s) URL, the port defaulted by scheme; None when it is no such URL.

    The host checked must be the host requests (urllib3) connects to. Parsers disagree on a
    backslash (``http://10.0.0.5\\@allowed/`` is host ``allowed`` to urlsplit, ``10.0.0.5`` to
    urllib3), on user info and on control characters, so URLs with any of these are refused, and
    both parsers must read the same host and port.
    """
    text = url.strip()
    if "\\" in text or any(char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in text):
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
        connected = parse_url(text)
    except (ValueError, LocationParseError):
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    default = _DEFAULT_PORTS[parts.scheme]
    host = parts.hostname.lower()
    if (connected.host or "").strip("[]").lower() != host or (connected.port or default) != (port or default):
        return None
    return host, port or default


@dataclass(frozen=True)
class AllowedHosts:
    patterns: tuple[HostPattern, ...] = ()

    @classmethod
    def of(cls, default_urls: Iterable[str | None], hosts: Iterable[str]) -> AllowedHosts:
        """The hosts of the operator's default URLs (exact port) plus the `--metric-hosts` entries."""
        patterns = [HostPattern(*found) for url in default_urls if url and (found := endpoint_of(url))]
        patterns += [parse_host(host) for host in hosts]
        return cls(tuple(dict.fromkeys(patterns)))

    def allows(self, url: str) -> bool:
        endpoint = endpoint_of(url)
        if endpoint is None:
            return False
        host, port = endpoint
        return any(p.host == host and p.port in (None, port) for p in self.patterns)

    def refusal(self, url: str) -> str:
        """Why `url` is refused, naming the flag that would allow it."""
        endpoint = endpoint_of(url)
        if endpoint is None:
            # Not echoed whole: a URL with user info would put a password in status and Events.
            return "address is not a plain http:// or https:// URL (a host, no user info or backslash)"
        allowed = ", ".join(str(p) for p in self.patterns) or "none"
        host = str(HostPattern(*endpoint))
        return (
            f"address {url} is not an allowed metric host (allowed: {allowed}); "
            f"run the operator with {FLAG} {host} to allow it"
        )
