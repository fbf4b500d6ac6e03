"""Every metric provider, keyed by its block's name on a metric: one line per provider.

The Rollout's `Metric` model is built from this list (`operators.api.rollout`),
so a provider registered here is part of the CRD, validation and analysis
with no other change. The first one is the default for a metric naming none.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from operators.metrics.base import MetricProvider
from operators.metrics.job import JobProvider
from operators.metrics.prometheus import PrometheusProvider
from operators.metrics.web import WebProvider

PROVIDERS: Mapping[str, MetricProvider] = MappingProxyType(
    {provider.field: provider for provider in (PrometheusProvider(), WebProvider(), JobProvider())}
)
DEFAULT_PROVIDER = "prometheus"
