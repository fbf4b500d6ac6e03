"""The metric-provider interface, and what every provider shares.

Like Flagger's metric providers, a provider only turns a rendered query into
one number. Rendering, thresholds and counting belong to the analysis. A
provider is one module (its configuration block, a pydantic model that becomes
part of the Rollout's CRD, and its client) plus one entry in `registry.py`;
the block owns the provider's address, timeout and credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from operators.foundation.model import ApiModel

if TYPE_CHECKING:
    from operators.metrics.credentials import SecretReader

# Error messages end up in Rollout status and Events: keep them a line long.
MAX_DETAIL = 200


class ProviderError(Exception):
    """The provider could not answer: unreachable, timed out, or the query was refused."""


class MetricProvider(Protocol):
    """Answers one query with one number. Implementations must be thread-safe."""

    @property
    def field(self) -> str:
        """The provider's key on a metric, e.g. ``prometheus``."""
        ...

    @property
    def config_model(self) -> type[ApiModel]:
        """The model of its block on a metric."""
        ...

    def address(self, config: Any) -> str | None:
        """The URL the metric's block names; None: the operator's default for this provider."""
        ...

    def timeout_seconds(self, config: Any) -> float:
        """How long the metric's block lets a query take."""
        ...

    def query(self, config: Any, address: str, query: str, timeout_seconds: float) -> float | None:
        """The query's single value; None when it selects no data.

        Raises ProviderError with a one-line message when there is no answer.
        """
        ...


# One series of a grouped query's answer: its labels and its value (NaN and ±Inf included).
Series = tuple[Mapping[str, str], float]


@runtime_checkable
class GroupingProvider(MetricProvider, Protocol):
    """A provider that can also answer a grouped query with every series it selects.

    An optional capability: the analysis fans the checks of many Rollouts into
    one grouped query (`operators.analysis.fanin`) only when a metric's provider
    has it; any other provider is simply queried once per Rollout.
    """

    def query_series(
        self, config: Any, address: str, query: str, timeout_seconds: float, at: float
    ) -> list[Series]:
        """Every series of `query` evaluated at `at` (Unix seconds); empty when it selects none.

        Raises ProviderError with a one-line message when there is no answer, or
        when the answer is not a list of series (a scalar, a range vector).
        """
        ...


@runtime_checkable
class CredentialedProvider(MetricProvider, Protocol):
    """A provider whose block names Secrets (credentials, a CA bundle): an optional capability.

    The analysis calls `bind` before each query, in the caller's thread, and
    passes its result to `query` (and `query_series`) in place of the block.
    """

    def bind(self, config: Any, namespace: str, secrets: SecretReader | None) -> Any:
        """The block with its credentials from `namespace`; ProviderError naming a missing Secret or key."""
        ...


def takes_query(provider: MetricProvider) -> bool:
    """Whether the provider's metrics have a `query` (or `template`); False: the block says it all (web)."""
    return bool(getattr(provider, "takes_query", True))


def shorten(text: str, limit: int = MAX_DETAIL) -> str:
    """One line, at most `limit` characters: what may go into a status or an Event."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
