"""A metric's credentials: read from Secrets in the Rollout's namespace, bound to its provider block.

A provider block names Secrets (``auth: {bearerTokenSecretRef: {name, key}}``,
``tls: {caSecretRef: {name, key}}``); the analysis resolves them, through the
`SecretReader` the operator gives it, into `Credentials`: the headers to send
and the CA bundle to trust. The block and its credentials travel together as a
`Bound` config to the provider's `query`, so the provider stays a plain client
and never reads the API itself.

Secret values never leave this module's objects except as request headers to
the metric's own address: messages name the Secret and key, never a value, and
the fan-in groups by a digest of the credentials, not by the credentials.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import Field, model_validator

from operators.foundation.model import ApiModel
from operators.metrics.base import ProviderError

BASIC_AUTH_USERNAME = "username"  # the keys of a kubernetes.io/basic-auth Secret
BASIC_AUTH_PASSWORD = "password"  # a key's name, not a password
DEFAULT_CA_KEY = "ca.crt"


class SecretKeySelector(ApiModel):
    name: str = Field(min_length=1, description="A Secret in the Rollout's namespace.")
    key: str = Field(min_length=1, description="The key of the Secret's data to use.")


class CaSecretKeySelector(ApiModel):
    name: str = Field(min_length=1, description="A Secret in the Rollout's namespace.")
    key: str = Field(default=DEFAULT_CA_KEY, min_length=1, description="The key holding PEM certificates.")


class SecretReference(ApiModel):
    name: str = Field(min_length=1, description="A Secret in the Rollout's namespace.")


class Auth(ApiModel):
    """Exactly one way to authenticate: a bearer token, or basic auth."""

    bearer_token_secret_ref: SecretKeySelector | None = Field(
        default=None, description="Sends `Authorization: Bearer <the key's value>`."
    )
    basic_auth_secret_ref: SecretReference | None = Field(
        default=None,
        description="Sends basic auth with the Secret's `username` and `password` keys "
        "(a kubernetes.io/basic-auth Secret).",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Auth:
        if (self.bearer_token_secret_ref is None) == (self.basic_auth_secret_ref is None):
            raise ValueError("auth needs exactly one of bearerTokenSecretRef or basicAuthSecretRef")
        return self


class Tls(ApiModel):
    ca_secret_ref: CaSecretKeySelector = Field(
        description="PEM CA certificates to verify the server with, instead of the operator's own."
    )


class SecretReader(Protocol):
    """Reads a Secret's data (values decoded); None when there is no such Secret. Thread-safe.

    Raises ProviderError when the Secret cannot be read (forbidden, API unreachable).
    """

    def read(self, namespace: str, name: str) -> Mapping[str, bytes] | None: ...


def secret_data(body: Mapping[str, Any] | None) -> Mapping[str, bytes] | None:
    """A Secret object's `data` (base64) and `stringData`, decoded; None for no Secret."""
    if body is None:
        return None
    data: dict[str, bytes] = {}
    for key, value in (body.get("data") or {}).items():
        try:
            data[str(key)] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            continue  # the API server refuses such data; a key we cannot decode is a missing key
    for key, value in (body.get("stringData") or {}).items():
        data[str(key)] = str(value).encode()
    return data


# How long a Secret read is reused. Every check of every Rollout naming a Secret needs it, and a
# thousand Rollouts sharing one must not cost a thousand GETs per interval: one GET per Secret
# per TTL instead. Short, so that a rotated token or a Secret created after the Rollout is picked
# up within seconds (a missing Secret is remembered as missing just as long).
SECRET_TTL_SECONDS = 10.0


@dataclass
class CachedSecrets:
    """A `SecretReader` that asks `fetch` (a GET) at most once per Secret per `ttl` seconds."""

    fetch: Callable[[str, str], Mapping[str, Any] | None]
    ttl: float = SECRET_TTL_SECONDS
    clock: Callable[[], float] = time.monotonic
    _entries: dict[tuple[str, str], tuple[float, Mapping[str, bytes] | None]] = field(default_factory=dict)
    _locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    fetches: int = 0  # GETs sent, for the tests that check the cache saves them

    def read(self, namespace: str, name: str) -> Mapping[str, bytes] | None:
        key = (namespace, name)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        # One GET per Secret at a time: the checks of many Rollouts starting together wait for it.
        with lock:
            with self._lock:
                cached = self._entries.get(key)
            if cached is not None and self.clock() - cached[0] < self.ttl:
                return cached[1]
            data = secret_data(self.fetch(namespace, name))
            with self._lock:
                self.fetches += 1
                self._entries[key] = (self.clock(), data)
            return data


@dataclass(frozen=True)
class Credentials:
    """What a request to the metric's address carries: headers (secret ones too) and a CA bundle."""

    headers: tuple[tuple[str, str], ...] = ()
    ca_pem: bytes | None = None

    def fingerprint(self) -> str:
        """A digest that tells credentials apart without holding them (a grouping and session key)."""
        if not self.headers and self.ca_pem is None:
            return ""
        digest = hashlib.sha256(json.dumps(self.headers).encode())
        digest.update(b"\0" + (self.ca_pem or b""))
        return digest.hexdigest()

    def __repr__(self) -> str:  # never print a secret, whatever logs the object
        return f"Credentials(headers={[name for name, _ in self.headers]}, ca={self.ca_pem is not None})"


@dataclass(frozen=True)
class Bound:
    """A provider block with the credentials resolved for one Rollout's namespace."""

    config: Any
    credentials: Credentials

    def group_key(self) -> str:
        """The fan-in's key for the block: its JSON and the credentials' digest, never their values."""
        block = (
            self.config.model_dump(mode="json") if isinstance(self.config, ApiModel) else repr(self.config)
        )
        return json.dumps({"block": block, "credentials": self.credentials.fingerprint()}, sort_keys=True)


def unbind(config: Any) -> tuple[Any, Credentials]:
    """(the provider block, its credentials); a block given as is has none."""
    if isinstance(config, Bound):
        return config.config, config.credentials
    return config, Credentials()


def _value(secrets: SecretReader | None, namespace: str, name: str, key: str, purpose: str) -> bytes:
    if secrets is None:
        raise ProviderError(f"cannot read Secret {namespace}/{name} for {purpose}: no Secret reader")
    data = secrets.read(namespace, name)
    if data is None:
        raise ProviderError(f'Secret "{name}" for {purpose} does not exist in namespace {namespace}')
    value = data.get(key)
    if value is None:
        raise ProviderError(f'Secret "{name}" for {purpose} has no key "{key}" (namespace {namespace})')
    return value


def _text(value: bytes, name: str, key: str, purpose: str) -> str:
    try:
        text = value.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ProviderError(f'key "{key}" of Secret "{name}" for {purpose} is not UTF-8 text') from None
    if not text or any(c in text for c in "\r\n\0"):
        raise ProviderError(f'key "{key}" of Secret "{name}" for {purpose} is empty or spans lines')
    return text


def resolve(
    namespace: str,
    headers: Mapping[str, str],
    auth: Auth | None,
    tls: Tls | None,
    secrets: SecretReader | None,
) -> Credentials:
    """The credentials a block names, read from Secrets in `namespace`; ProviderError if one is missing."""
    sent = [(name, value) for name, value in headers.items()]
    if auth is not None and auth.bearer_token_secret_ref is not None:
        ref = auth.bearer_token_secret_ref
        token = _text(
            _value(secrets, namespace, ref.name, ref.key, "the bearer token"),
            ref.name,
            ref.key,
            "the bearer token",
        )
        sent.append(("Authorization", f"Bearer {token}"))
    elif auth is not None and auth.basic_auth_secret_ref is not None:
        name = auth.basic_auth_secret_ref.name
        purpose = "basic auth"
        user = _value(secrets, namespace, name, BASIC_AUTH_USERNAME, purpose)
        password = _value(secrets, namespace, name, BASIC_AUTH_PASSWORD, purpose)
        pair = base64.b64encode(user + b":" + password).decode("ascii")
        sent.append(("Authorization", f"Basic {pair}"))
    ca = None
    if tls is not None:
        ref_ca = tls.ca_secret_ref
        ca = _value(secrets, namespace, ref_ca.name, ref_ca.key, "the CA bundle")
        if b"-----BEGIN CERTIFICATE-----" not in ca:
            raise ProviderError(f'key "{ref_ca.key}" of Secret "{ref_ca.name}" holds no PEM certificate')
    return Credentials(tuple(sent), ca)
